// Command blog-leader is the baseline for leasehold's end-to-end runs: the
// leader-election program of the blog post the project grew from, restated.
//
// It uses client-go's in-cluster config, a LeaseLock named "test-lease" in the
// pod's namespace, LeaseDuration 15s, RenewDeadline 10s, RetryPeriod 2s and
// ReleaseOnCancel, and it installs no signal handler: SIGTERM ends the process
// at once, so the Lease is never released on a redeploy. While leading it logs
// "still leading" once a second (the post used 5 s; a finer tick only sharpens
// the measurement of when work stops).
package main

import (
	"context"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

const namespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func main() {
	config, err := rest.InClusterConfig()
	if err != nil {
		klog.ErrorS(err, "in-cluster config")
		os.Exit(1)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		klog.ErrorS(err, "client")
		os.Exit(1)
	}
	identity, err := os.Hostname()
	if err != nil {
		klog.ErrorS(err, "hostname")
		os.Exit(1)
	}
	ns, err := os.ReadFile(namespaceFile)
	if err != nil {
		klog.ErrorS(err, "namespace")
		os.Exit(1)
	}

	ctx, cancel := context.WithCancel(context.Background())
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: strings.TrimSpace(string(ns)), Name: "test-lease"},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
		},
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				klog.InfoS("leading")
				tick := time.NewTicker(time.Second)
				defer tick.Stop()
				for {
					select {
					case <-tick.C:
						klog.InfoS("still leading")
					case <-ctx.Done():
						klog.InfoS("leading cancelled")
						return
					}
				}
			},
			OnStoppedLeading: func() {
				cancel()
				klog.InfoS("stopped leading")
			},
			OnNewLeader: func(id string) {
				klog.InfoS("new leader", "id", id)
			},
		},
	})
}
