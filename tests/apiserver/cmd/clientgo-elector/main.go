// Command clientgo-elector is a client-go leader-election replica used as the
// baseline and as a peer in leasehold's interoperation, fault and benchmark runs.
//
// It prints one JSON object per line on stdout: {"event": "...", "ts": <unix ms>, ...}
// with events "ready", "new-leader", "started", "work-stopped", "stopped" and "exit".
// "started" and "stopped" bracket the time this replica believes it leads; "work-stopped"
// is when the leader's context (its work) ends.
//
// -coordinated runs client-go's coordinated leader election (LeaderElectionConfig.Coordinated)
// with a LeaseCandidate (leaderelection.NewCandidate, strategy OldestEmulationVersion) of
// -binary-version / -emulation-version. client-go's Run returns when a term ends; with -rerun
// the replica contends again (as a restarted pod would), until it is signalled. -events records
// client-go's leader-election Events on the Lease.
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

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
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
	coordinated := flag.Bool("coordinated", false, "coordinated leader election with a LeaseCandidate")
	binaryVersion := flag.String("binary-version", "1.0.0", "LeaseCandidate binaryVersion (with -coordinated)")
	emulationVersion := flag.String("emulation-version", "", "LeaseCandidate emulationVersion (default: binary version)")
	deleteCandidate := flag.Bool("delete-candidate-on-exit", false, "on SIGTERM/SIGINT, delete the LeaseCandidate before the elector stops (client-go itself leaves it to the garbage collector)")
	rerun := flag.Bool("rerun", false, "contend again after a term ends, until signalled")
	events := flag.Bool("events", false, "record leader-election Events on the Lease")
	flag.Parse()
	if *emulationVersion == "" {
		*emulationVersion = *binaryVersion
	}

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
	lockConfig := resourcelock.ResourceLockConfig{Identity: *id}
	var broadcaster record.EventBroadcaster
	if *events {
		broadcaster = record.NewBroadcaster()
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events(*ns)})
		lockConfig.EventRecorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "clientgo-elector"})
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: *name, Namespace: *ns},
		Client:     client.CoordinationV1(),
		LockConfig: lockConfig,
	}
	ctx, cancel := context.WithCancel(context.Background())
	// The LeaseCandidate has its own context: with -delete-candidate-on-exit it is
	// deleted before the elector stops (and releases), so that the election controller
	// does not name this replica again in between.
	candCtx, candCancel := context.WithCancel(context.Background())
	candidateDone := make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		emit("signal", map[string]any{"signal": s.String()})
		if *coordinated && *deleteCandidate {
			candCancel()
			<-candidateDone
			dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := client.CoordinationV1beta1().LeaseCandidates(*ns).Delete(dctx, *id, metav1.DeleteOptions{})
			dcancel()
			if err != nil {
				emit("error", map[string]any{"error": "delete LeaseCandidate: " + err.Error()})
			}
		}
		cancel()
		candCancel()
	}()
	if !*coordinated {
		close(candidateDone)
	} else {
		candidate, waiter, err := leaderelection.NewCandidate(client, *ns, *id, *name, *binaryVersion, *emulationVersion,
			coordinationv1.OldestEmulationVersion)
		if err != nil {
			emit("error", map[string]any{"error": err.Error()})
			os.Exit(2)
		}
		go func() {
			defer close(candidateDone)
			candidate.Run(candCtx)
		}()
		waiter.WaitForCacheSync(candCtx.Done())
		emit("candidate", map[string]any{"identity": *id, "binaryVersion": *binaryVersion, "emulationVersion": *emulationVersion})
	}
	emit("ready", map[string]any{"identity": *id})
	config := leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   *ld,
		RenewDeadline:   *rd,
		RetryPeriod:     *rp,
		ReleaseOnCancel: *release,
		Name:            *name,
		Coordinated:     *coordinated,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				emit("started", map[string]any{"identity": *id})
				<-lctx.Done()
				// The leader's work ends here, before client-go releases the Lease.
				emit("work-stopped", map[string]any{"identity": *id})
			},
			OnStoppedLeading: func() {
				emit("stopped", map[string]any{"identity": *id})
			},
			OnNewLeader: func(identity string) {
				emit("new-leader", map[string]any{"leader": identity})
			},
		},
	}
	for {
		leaderelection.RunOrDie(ctx, config)
		if !*rerun || ctx.Err() != nil {
			break
		}
		emit("rerun", nil)
	}
	candCancel()
	<-candidateDone
	if broadcaster != nil {
		// Events are written asynchronously by the broadcaster; give the last one time to land.
		time.Sleep(time.Second)
		broadcaster.Shutdown()
	}
	emit("exit", nil)
}
