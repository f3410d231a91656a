package bench

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DefaultStateDir is where the benchmark keeps the files written per pod
// unless told otherwise: /dev/shm when it is a tmpfs, else os.TempDir().
//
// Both implementations create a file or two per ADD and remove them per
// DEL, and the benchmark does that thousands of times. On a disk file
// system the cost of creating a file can then depend on how many were
// removed in the last minutes rather than on the pods present: ext4
// without a journal skips, inode by inode, every inode freed in the last
// 60 to 300 seconds when it allocates one, so host-local's step doubled
// over a run on such a root file system, a drift that reads as growth
// with pods present or hides it depending on the order of the cases. In
// memory the benchmark measures the network stack and the plugins; a run
// on a disk of choice is one flag away (linen bench cni -state-dir).
func DefaultStateDir() string {
	if fsName("/dev/shm") == "tmpfs" {
		return "/dev/shm"
	}
	return os.TempDir()
}

// fsName names the file system that holds path, for the report.
func fsName(path string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "unknown"
	}
	switch int64(st.Type) {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext2/3/4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("type %#x", st.Type)
}
