// Command etcd is etcd's own server, built from its Go module at the version
// that go.mod pins: the tests' control plane needs a newer etcd than the
// distribution ships, and etcd's root module cannot be installed directly.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
