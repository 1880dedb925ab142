// Every P/Invoke here is blittable (LibraryImport does the marshalling in C#), so crossgen2 can precompile the
// native call stubs too and the init starts without generating any at run time.
[assembly: System.Runtime.CompilerServices.DisableRuntimeMarshalling]
