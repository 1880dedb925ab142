// FUSE is Linux-only, and so are these tests.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
