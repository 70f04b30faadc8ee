package plugin

import (
	"os"
	"testing"

	utilfeature "k8s.io/apiserver/pkg/util/feature"
)

func TestMain(m *testing.M) {
	// external-snapshotter's fake clientset cannot serve watch-list streams
	// (its generated informers predate the opt-out client-go's own fakes
	// have), so reflectors list and watch the classic way in these tests.
	if err := utilfeature.DefaultMutableFeatureGate.Set("WatchListClient=false"); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}
