// rampart-csi-hostpath is a small CSI driver for Rampart's local control plane: volumes are
// directories and snapshots are checksummed tar.gz archives under one state directory. It
// stands in for github.com/kubernetes-csi/csi-driver-host-path, which the Go module proxy
// does not serve. It has no node plugin that mounts anything: there is no kubelet here.
package main

import (
	"errors"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
)

// version is stamped by e2e/tools/build.sh.
var version = "dev"

func main() {
	endpoint := flag.String("endpoint", "", "unix socket path to serve CSI on")
	stateDir := flag.String("state-dir", "", "directory holding volumes/ and snapshots/")
	name := flag.String("driver-name", "hostpath.csi.rampart.dev", "the CSI driver name")
	nodeID := flag.String("node-id", "rampart-local", "the node id NodeGetInfo reports")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)
	if *endpoint == "" || *stateDir == "" {
		log.Fatal("--endpoint and --state-dir are required")
	}
	st, err := newStore(*stateDir)
	if err != nil {
		log.Fatalf("state directory %s: %v", *stateDir, err)
	}
	if err := os.Remove(*endpoint); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Fatalf("removing the old socket %s: %v", *endpoint, err)
	}
	lis, err := net.Listen("unix", *endpoint)
	if err != nil {
		log.Fatalf("listening on %s: %v", *endpoint, err)
	}
	d := &driver{name: *name, version: version, nodeID: *nodeID, store: st, now: time.Now}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	csi.RegisterNodeServer(srv, d)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		srv.GracefulStop()
	}()
	log.Printf("%s %s serving on unix://%s, state in %s", *name, version, *endpoint, *stateDir)
	if err := srv.Serve(lis); err != nil {
		log.Fatalf("serving: %v", err)
	}
	os.Remove(*endpoint)
}
