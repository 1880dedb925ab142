using System.Diagnostics;

// Debug builds would otherwise tell the JIT not to optimize this assembly: no inlining, every vector spilled, BLAKE3
// about 100 times slower (17 MB/s), which makes every test that hashes a real tree crawl. Debugging still works;
// some locals show as optimized away. (Equivalent to <Optimize>true</Optimize> for the JIT only; the lead may move
// this to Castore.csproj.)
[assembly: Debuggable(DebuggableAttribute.DebuggingModes.Default | DebuggableAttribute.DebuggingModes.IgnoreSymbolStoreSequencePoints)]
