package v1alpha1

import "testing"

// Generated names are stored: the same input must give the same name for
// ever. The expected values were taken from the code before the schemes
// moved here (csi/controller's volumeID, lvNameFor and snapshotID, and
// InlineVolumeName).
func TestGeneratedNamesNeverChange(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"inline", InlineVolumeName("4f1c0a3e-8f2b-4c11-9d3e-0a1b2c3d4e5f", "scratch"),
			"csi-c6a18f699d1871ccd2bf3f219868ae4cb9117932246c72f8844601e3c2e95f64"},
		{"request Bad_Name", RequestVolumeName("Bad_Name"), "csi-5076bbac21f8b0c5cd4937d0e6aca4b516e1aa35"},
		{"request snap-x", RequestVolumeName("snap-x"), "csi-25a90a2d78c369c92618e3609c318d17c4e69692"},
		{"request a/b", RequestVolumeName("a/b"), "csi-c14cddc033f64b9dea80ea675cf280a015e67251"},
		{"request UPPER", RequestVolumeName("UPPER"), "csi-9cba1c6593a62cf5e44b2d18a7331e5c20f715ca"},
		{"lv of an inline handle", GeneratedLVName("csi-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
			"lv-0b769ca6a312a5a1a13155f4b030d820"},
		{"lv snapshot-x", GeneratedLVName("snapshot-x"), "lv-2ab880e60fac5ce4a8f274dfdd0ed755"},
		{"lv -lead", GeneratedLVName("-lead"), "lv-54e05a0bef38bd81404e5a27c05c9124"},
		{"lv x/y", GeneratedLVName("x/y"), "lv-bd3c9047d6816c3172f52ddb42bf77c7"},
		{"snapshot of external-snapshotter", SnapshotVolumeName("snapshot-4f1c0a3e-8f2b-4c11-9d3e-0a1b2c3d4e5f"),
			"snap-4f1c0a3e-8f2b-4c11-9d3e-0a1b2c3d4e5f"},
		{"snapshot-UPPER", SnapshotVolumeName("snapshot-UPPER"), "snap-b1e47689dfa48e6600fc74997e1802b21d2ea6d3"},
		{"my snap", SnapshotVolumeName("my snap"), "snap-e450623bbba6b3bf0fcc960097f8b65c74ad492c"},
		{"snapshot-", SnapshotVolumeName("snapshot-"), "snap-6afde0d7e4a6248a03ec6fffec5342e030bed6d0"},
		{"pvc", PVCVolumeName("1234"), "pvc-1234"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}
