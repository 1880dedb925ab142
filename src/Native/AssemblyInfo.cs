// Every P/Invoke here is blittable (LibraryImport does the marshalling in C#), so crossgen2 and NativeAOT precompile the
// native call stubs too and nothing is generated at run time.
[assembly: System.Runtime.CompilerServices.DisableRuntimeMarshalling]
