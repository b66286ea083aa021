// Command kubenode runs the parts of a one-node Kubernetes cluster for
// leasehold's end-to-end tests, one part per process:
//
//	kubenode apiserver --dir DIR --bind IP --service-cidr CIDR   embedded etcd + kube-apiserver
//	kubenode controller-manager [kube-controller-manager flags]
//	kubenode scheduler [kube-scheduler flags]
//	kubenode kubelet [kubelet flags]
//
// All parts come from the same k8s.io/kubernetes module, so the binary links once.
//
// The apiserver part keeps its state (keys, certificates, etcd data, port) in
// --dir. Its serving certificate names the bind address and the first address
// of the service range (the "kubernetes" Service), so pods can reach it through
// KUBERNETES_SERVICE_HOST/PORT as in any cluster. When it is ready it prints
// one JSON line on stdout; everything else goes to stderr.
package main

import (
	"context"
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
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

const adminToken = "leasehold-e2e-admin-token"

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kubenode: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: kubenode apiserver|controller-manager|scheduler|kubelet [flags]")
	}
	sub, rest := os.Args[1], os.Args[2:]
	switch sub {
	case "apiserver":
		runAPIServer(rest)
	case "controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "scheduler":
		cmd := scheduler.NewSchedulerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "kubelet":
		cmd := kubelet.NewKubeletCommand(context.Background())
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	default:
		fail("unknown part %q; use apiserver, controller-manager, scheduler or kubelet", sub)
	}
}

type readyLine struct {
	URL        string `json:"url"`
	Host       string `json:"host"`
	Port       int    `json:"port"`
	ServiceIP  string `json:"serviceIP"`
	CAFile     string `json:"caFile"`
	CAKeyFile  string `json:"caKeyFile"`
	SAKeyFile  string `json:"saKeyFile"`
	AdminToken string `json:"adminToken"`
	Kubeconfig string `json:"kubeconfig"`
	AuditLog   string `json:"auditLog"`
	Dir        string `json:"dir"`
	PID        int    `json:"pid"`
	ReadyMs    int64  `json:"readyMs"`
}

func runAPIServer(argv []string) {
	start := time.Now()
	fs := flag.NewFlagSet("apiserver", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory (required)")
	bind := fs.String("bind", "127.0.0.1", "address to serve on (must be reachable from the pod network)")
	serviceCIDR := fs.String("service-cidr", "10.0.0.0/24", "service IP range; its first address is the kubernetes Service")
	verbosity := fs.Int("v", 0, "kube-apiserver log verbosity")
	_ = fs.Parse(argv)
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
	_, cidr, err := net.ParseCIDR(*serviceCIDR)
	if err != nil {
		fail("--service-cidr: %v", err)
	}
	svcIP := make(net.IP, len(cidr.IP.To4()))
	copy(svcIP, cidr.IP.To4())
	svcIP[3]++
	bindIP := net.ParseIP(*bind)
	if bindIP == nil {
		fail("--bind %q is not an IP address", *bind)
	}
	if err := ensurePKI(abs, []net.IP{bindIP, svcIP, net.ParseIP("127.0.0.1")}); err != nil {
		fail("pki: %v", err)
	}
	port, err := loadOrPickPort(filepath.Join(abs, "port"), *bind)
	if err != nil {
		fail("port: %v", err)
	}
	tokens := filepath.Join(abs, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+",leasehold-e2e-admin,leasehold-e2e-admin-uid,\"system:masters\"\n"), 0o600); err != nil {
		fail("%v", err)
	}
	// Lease requests at Metadata level: each entry carries the pod name and the
	// credential id (the token's jti), which shows which projected token a
	// replica used, and the status code, which shows what RBAC refused.
	policy := filepath.Join(abs, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    resources: [{group: coordination.k8s.io, resources: [leases]}]
    verbs: [create, update, patch, get, list, watch]
  - level: None
`), 0o600); err != nil {
		fail("%v", err)
	}
	etcdPort, err := loadOrPickPort(filepath.Join(abs, "etcd-port"), "127.0.0.1")
	if err != nil {
		fail("port: %v", err)
	}
	peerPort, err := loadOrPickPort(filepath.Join(abs, "etcd-peer-port"), "127.0.0.1")
	if err != nil {
		fail("port: %v", err)
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	if err := startEtcd(filepath.Join(abs, "etcd"), etcdURL, fmt.Sprintf("http://127.0.0.1:%d", peerPort)); err != nil {
		fail("etcd: %v", err)
	}
	auditLog := filepath.Join(abs, "audit.log")
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + *bind,
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + filepath.Join(abs, "serving.crt"),
		"--tls-private-key-file=" + filepath.Join(abs, "serving.key"),
		"--client-ca-file=" + filepath.Join(abs, "ca.crt"),
		"--advertise-address=" + *bind,
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=" + *serviceCIDR,
		"--authorization-mode=RBAC",
		"--token-auth-file=" + tokens,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-signing-key-file=" + filepath.Join(abs, "sa.key"),
		"--service-account-key-file=" + filepath.Join(abs, "sa.key"),
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--audit-policy-file=" + policy,
		"--audit-log-path=" + auditLog,
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--v=" + strconv.Itoa(*verbosity),
	}
	cmd := apiserver.NewAPIServerCommand()
	cmd.SetArgs(args)
	go func() {
		code := cli.Run(cmd)
		fmt.Fprintf(os.Stderr, "kubenode: kube-apiserver exited with code %d\n", code)
		os.Exit(code)
	}()
	apiURL := "https://" + net.JoinHostPort(*bind, strconv.Itoa(port))
	if err := waitReady(apiURL, filepath.Join(abs, "ca.crt"), 150*time.Second); err != nil {
		fail("kube-apiserver not ready: %v", err)
	}
	kubeconfig := filepath.Join(abs, "admin.kubeconfig")
	if err := writeKubeconfig(kubeconfig, apiURL, filepath.Join(abs, "ca.crt")); err != nil {
		fail("%v", err)
	}
	line, _ := json.Marshal(readyLine{
		URL: apiURL, Host: *bind, Port: port, ServiceIP: svcIP.String(),
		CAFile: filepath.Join(abs, "ca.crt"), CAKeyFile: filepath.Join(abs, "ca.key"), SAKeyFile: filepath.Join(abs, "sa.key"),
		AdminToken: adminToken, Kubeconfig: kubeconfig, AuditLog: auditLog, Dir: abs, PID: os.Getpid(),
		ReadyMs: time.Since(start).Milliseconds(),
	})
	fmt.Println(string(line))
	select {}
}

func loadOrPickPort(path, host string) (int, error) {
	if b, err := os.ReadFile(path); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			return n, nil
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	n := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return n, os.WriteFile(path, []byte(strconv.Itoa(n)), 0o600)
}

func startEtcd(dataDir, clientURL, peerURL string) error {
	cu, _ := url.Parse(clientURL)
	pu, _ := url.Parse(peerURL)
	cfg := embed.NewConfig()
	cfg.Name = "kubenode"
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
- name: e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: e2e
  context:
    cluster: e2e
    user: admin
current-context: e2e
`, apiURL, caFile, adminToken)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// ensurePKI creates a CA (its key is kept for the controller-manager's signer),
// a serving certificate for ips and the in-cluster DNS names, and the
// service-account signing key, unless they already exist in dir.
func ensurePKI(dir string, ips []net.IP) error {
	if _, err := os.Stat(filepath.Join(dir, "ca.crt")); err == nil {
		return nil
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "leasehold-e2e-ca"},
		NotBefore: now, NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: ips,
		NotBefore:   now, NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	if err := writePEM(filepath.Join(dir, "serving.crt"), "CERTIFICATE", der); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "serving.key"), "EC PRIVATE KEY", kder); err != nil {
		return err
	}
	cakder, _ := x509.MarshalECPrivateKey(caKey)
	if err := writePEM(filepath.Join(dir, "ca.key"), "EC PRIVATE KEY", cakder); err != nil {
		return err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)); err != nil {
		return err
	}
	// The CA certificate is written last so that a half-finished run is redone.
	return writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER)
}
