package telemetry

import "runtime"

// goosName is the operating system as ResolvePaths names it.
func goosName() string {
	if runtime.GOOS == "darwin" {
		return "macos"
	}
	return runtime.GOOS
}
