// Command clientgo-elector is a client-go leader-election replica used as the
// baseline and as a peer in leasehold's interoperation, fault and benchmark runs.
//
// It prints one JSON object per line on stdout: {"event": "...", "ts": <unix ms>, ...}
// with events "ready", "new-leader", "started", "stopped" and "exit". "started" and
// "stopped" bracket the time this replica believes it leads.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

var mu sync.Mutex

func emit(event string, extra map[string]any) {
	m := map[string]any{"event": event, "ts": float64(time.Now().UnixNano()) / 1e6}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	mu.Lock()
	defer mu.Unlock()
	fmt.Println(string(b))
}

func main() {
	server := flag.String("server", "", "API server URL (default from KUBERNETES_SERVICE_HOST/PORT)")
	saDir := flag.String("service-account-dir", "/var/run/secrets/kubernetes.io/serviceaccount", "directory with token and ca.crt")
	name := flag.String("lease-name", "", "Lease name")
	ns := flag.String("lease-namespace", "", "Lease namespace (default: namespace file)")
	id := flag.String("identity", os.Getenv("POD_NAME"), "holder identity")
	ld := flag.Duration("lease-duration", 15*time.Second, "LeaseDuration")
	rd := flag.Duration("renew-deadline", 10*time.Second, "RenewDeadline")
	rp := flag.Duration("retry-period", 2*time.Second, "RetryPeriod")
	release := flag.Bool("release-on-cancel", true, "ReleaseOnCancel")
	flag.Parse()

	if *server == "" {
		*server = fmt.Sprintf("https://%s:%s", os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	}
	if *ns == "" {
		b, err := os.ReadFile(*saDir + "/namespace")
		if err != nil {
			emit("error", map[string]any{"error": err.Error()})
			os.Exit(2)
		}
		*ns = string(b)
	}
	cfg := &rest.Config{
		Host:            *server,
		BearerTokenFile: *saDir + "/token",
		TLSClientConfig: rest.TLSClientConfig{CAFile: *saDir + "/ca.crt"},
		Timeout:         max(time.Second, *rd/2),
		QPS:             50,
		Burst:           100,
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		emit("error", map[string]any{"error": err.Error()})
		os.Exit(2)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: *name, Namespace: *ns},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: *id},
	}
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		emit("signal", map[string]any{"signal": s.String()})
		cancel()
	}()
	emit("ready", map[string]any{"identity": *id})
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   *ld,
		RenewDeadline:   *rd,
		RetryPeriod:     *rp,
		ReleaseOnCancel: *release,
		Name:            *name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				emit("started", map[string]any{"identity": *id})
				<-lctx.Done()
			},
			OnStoppedLeading: func() {
				emit("stopped", map[string]any{"identity": *id})
			},
			OnNewLeader: func(identity string) {
				emit("new-leader", map[string]any{"leader": identity})
			},
		},
	})
	emit("exit", nil)
}
