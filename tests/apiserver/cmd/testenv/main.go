// Command testenv runs an embedded etcd and a real kube-apiserver in one process
// for leasehold's integration tests.
//
// State (keys, certificates, etcd data, chosen ports) lives in --dir and is reused
// when the process is started again on the same directory, so a test can SIGKILL
// the control plane and bring it back with the same URL, CA and data.
//
// When the API server answers /readyz and the "default" namespace exists, one JSON
// line describing the connection is printed on stdout. Everything else goes to stderr.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

const adminToken = "leasehold-admin-token"

type ports struct {
	API      int `json:"api"`
	EtcdPeer int `json:"etcdPeer"`
	Etcd     int `json:"etcd"`
}

type readyLine struct {
	URL        string `json:"url"`
	Host       string `json:"host"`
	Port       int    `json:"port"`
	CAFile     string `json:"caFile"`
	AdminToken string `json:"adminToken"`
	AdminCert  string `json:"adminCertFile"`
	AdminKey   string `json:"adminKeyFile"`
	Kubeconfig string `json:"kubeconfig"`
	Dir        string `json:"dir"`
	EtcdURL    string `json:"etcdUrl"`
	PID        int    `json:"pid"`
	ReadyMs    int64  `json:"readyMs"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "testenv: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	start := time.Now()
	fs := flag.NewFlagSet("testenv", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory (required; reused across restarts)")
	verbosity := fs.Int("v", 0, "kube-apiserver log verbosity")
	timeout := fs.Duration("ready-timeout", 120*time.Second, "how long to wait for /readyz")
	_ = fs.Parse(os.Args[1:])
	if *dir == "" {
		fail("--dir is required")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fail("%v", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		fail("%v", err)
	}
	p, err := loadOrPickPorts(filepath.Join(abs, "ports.json"))
	if err != nil {
		fail("ports: %v", err)
	}
	if err := ensurePKI(abs); err != nil {
		fail("pki: %v", err)
	}
	tokens := filepath.Join(abs, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+",leasehold-admin,leasehold-admin-uid,\"system:masters\"\n"), 0o600); err != nil {
		fail("%v", err)
	}

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", p.Etcd)
	if err := startEtcd(filepath.Join(abs, "etcd"), etcdURL, fmt.Sprintf("http://127.0.0.1:%d", p.EtcdPeer)); err != nil {
		fail("etcd: %v", err)
	}

	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(p.API),
		"--tls-cert-file=" + filepath.Join(abs, "serving.crt"),
		"--tls-private-key-file=" + filepath.Join(abs, "serving.key"),
		"--client-ca-file=" + filepath.Join(abs, "ca.crt"),
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--token-auth-file=" + tokens,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-signing-key-file=" + filepath.Join(abs, "sa.key"),
		"--service-account-key-file=" + filepath.Join(abs, "sa.key"),
		"--enable-priority-and-fairness=false",
		// Coordinated leader election (KEP-4355, beta and off by default in 1.37):
		// the election controller runs inside kube-apiserver and serves LeaseCandidates.
		"--feature-gates=CoordinatedLeaderElection=true",
		"--runtime-config=coordination.k8s.io/v1beta1=true",
		"--profiling=false",
		"--v=" + strconv.Itoa(*verbosity),
	}
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(args)
	go func() {
		code := cli.Run(cmd)
		fmt.Fprintf(os.Stderr, "testenv: kube-apiserver exited with code %d\n", code)
		os.Exit(code)
	}()

	apiURL := fmt.Sprintf("https://127.0.0.1:%d", p.API)
	if err := waitReady(apiURL, filepath.Join(abs, "ca.crt"), *timeout); err != nil {
		fail("kube-apiserver not ready: %v", err)
	}
	kubeconfig := filepath.Join(abs, "admin.kubeconfig")
	if err := writeKubeconfig(kubeconfig, apiURL, filepath.Join(abs, "ca.crt")); err != nil {
		fail("%v", err)
	}
	line, _ := json.Marshal(readyLine{
		URL: apiURL, Host: "127.0.0.1", Port: p.API, CAFile: filepath.Join(abs, "ca.crt"),
		AdminToken: adminToken, AdminCert: filepath.Join(abs, "admin.crt"), AdminKey: filepath.Join(abs, "admin.key"),
		Kubeconfig: kubeconfig, Dir: abs, EtcdURL: etcdURL, PID: os.Getpid(),
		ReadyMs: time.Since(start).Milliseconds(),
	})
	fmt.Println(string(line))
	select {}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func loadOrPickPorts(path string) (ports, error) {
	var p ports
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &p); err == nil && p.API > 0 {
			return p, nil
		}
	}
	seen := map[int]bool{}
	for _, dst := range []*int{&p.API, &p.Etcd, &p.EtcdPeer} {
		for {
			n, err := freePort()
			if err != nil {
				return p, err
			}
			if !seen[n] {
				seen[n] = true
				*dst = n
				break
			}
		}
	}
	b, _ := json.Marshal(p)
	return p, os.WriteFile(path, b, 0o600)
}

func startEtcd(dataDir, clientURL, peerURL string) error {
	cu, _ := url.Parse(clientURL)
	pu, _ := url.Parse(peerURL)
	cfg := embed.NewConfig()
	cfg.Name = "testenv"
	cfg.Dir = dataDir
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return err
	case <-time.After(60 * time.Second):
		return errors.New("etcd did not become ready within 60s")
	}
}

func waitReady(apiURL, caFile string, timeout time.Duration) error {
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(timeout)
	last := "no answer yet"
	for _, path := range []string{"/readyz", "/api/v1/namespaces/default"} {
		for {
			if time.Now().After(deadline) {
				return fmt.Errorf("waited %s for %s; last: %s", timeout, path, last)
			}
			req, _ := http.NewRequest("GET", apiURL+path, nil)
			req.Header.Set("Authorization", "Bearer "+adminToken)
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
				last = resp.Status
			} else {
				last = err.Error()
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	return nil
}

func writeKubeconfig(path, apiURL, caFile string) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: testenv
  context:
    cluster: testenv
    user: admin
    namespace: default
current-context: testenv
`, apiURL, caFile, adminToken)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// ensurePKI creates a CA, a serving certificate for 127.0.0.1/localhost, an admin
// client certificate in system:masters, and the service-account signing key, unless
// they already exist in dir.
func ensurePKI(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "ca.crt")); err == nil {
		return nil
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	// Valid from 30 days ago: the fault suite runs replicas whose wall clock is hours behind.
	now := time.Now().Add(-30 * 24 * time.Hour)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "leasehold-testenv-ca"},
		NotBefore: now, NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(name string, tmpl *x509.Certificate) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl.NotBefore, tmpl.NotAfter = now, now.Add(10*365*24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(filepath.Join(dir, name+".key"), "EC PRIVATE KEY", kder)
	}
	if err := issue("serving", &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return err
	}
	if err := issue("admin", &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "leasehold-admin-cert", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)); err != nil {
		return err
	}
	// The CA is written last so that a half-finished run is redone next time.
	return writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER)
}
