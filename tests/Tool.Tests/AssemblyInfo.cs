// The tool and its mounts are Linux-only.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
