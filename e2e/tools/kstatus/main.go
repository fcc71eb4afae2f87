// Command kstatus prints what sigs.k8s.io/cli-utils' kstatus (the library Flux and
// `kubectl wait`-style tools use) reads from one object: the e2e suite pipes a live
// HardeningProfile in as JSON and asserts the verdict, so the status Rampart writes is checked
// by the real library rather than by our reading of its rules.
//
// Usage: kubectl get hp NAME -o json | kstatus
// Prints one line of JSON: {"status":"Current|InProgress|Failed|...","message":"..."}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(raw); err != nil {
		fail("decoding the object: %v", err)
	}
	res, err := status.Compute(&obj)
	if err != nil {
		fail("computing status: %v", err)
	}
	out, err := json.Marshal(map[string]string{
		"status":  res.Status.String(),
		"message": res.Message,
	})
	if err != nil {
		fail("encoding the result: %v", err)
	}
	fmt.Println(string(out))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}
