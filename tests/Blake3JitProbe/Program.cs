using System.Diagnostics;
using System.Diagnostics.Tracing;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using TvixFuseBuild.Build.Refscan;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Hashing;

// The child process of Castore.Tests' Blake3JitTests and of `scripts/bench blake3`, so that the caller's own JIT
// does not count. Without arguments: hashes 1 MiB once in this fresh process and prints one
// "jit NAMESPACE.TYPE.METHOD SIGNATURE" line per method the JIT compiled meanwhile, then "level", "elapsed_us",
// "digest" and "done". With "vectors FILE": checks every case of the official BLAKE3 vector file (hash, keyed hash, derived key) and prints "level",
// "checked N" or one "mismatch" line per failure. With "refscan DIR ENGINE" (NixHash or General): writes 1 MiB with
// needles planted into DIR, then, JIT events recorded, compiles the needles and scans the bytes as a build does (the
// import's observer, fed in two pieces) and the file as the refscan command does (ReferenceScanner.ScanPath); prints
// the "jit" lines, "import FOUND", "path FOUND" (needle indexes, comma-separated) and "done". With "throughput SIZE
// REPS" (for docs/benchmarks.md, not the tests): hashes SIZE random bytes REPS times and prints the best rate.
if (args is ["vectors", string vectorFile])
{
    return CheckVectors(vectorFile);
}

if (args is ["throughput", string sizeText, string repsText])
{
    return Throughput(int.Parse(sizeText), int.Parse(repsText));
}

if (args is ["x86-level"])
{
    Console.WriteLine(SimdKernelLibrary.X86Level());
    return 0;
}

if (args is ["hash-many", string hmSize, string hmReps, .. var libraries])
{
    return HashManyThroughput(int.Parse(hmSize), int.Parse(hmReps), libraries);
}

if (args is ["refscan", string scanDirectory, string engine])
{
    return ProbeRefscan(scanDirectory, Enum.Parse<RefscanEngine>(engine));
}

using var listener = new JitListener();
listener.WaitUntilEnabled();

var data = new byte[1 << 20];
for (int i = 0; i < data.Length; i++)
{
    data[i] = (byte)(i % 251);
}

Sentinel.Begin();
long started = Stopwatch.GetTimestamp();
B3Digest digest = Blake3.Hash(data);
TimeSpan elapsed = Stopwatch.GetElapsedTime(started);
listener.Flush();

foreach (string method in listener.Methods)
{
    Console.WriteLine($"jit {method}");
}

Console.WriteLine($"level {Blake3Backend.Best}");
Console.WriteLine($"elapsed_us {elapsed.TotalMicroseconds:F0}");
Console.WriteLine($"digest {digest.ToHex()}");
Console.WriteLine("done");
return 0;

static int ProbeRefscan(string directory, RefscanEngine engine)
{
    // Needles 0, 2 and 4 are planted; 1 and 3 are not. One straddles the middle, where the import's pieces meet.
    const string Alphabet = NeedleSet.NixBase32Alphabet;
    var random = new Random(7);
    string[] needles = [.. Enumerable.Range(0, 5).Select(_ => new string([.. Enumerable.Range(0, 32).Select(_ => Alphabet[random.Next(32)])]))];
    var data = new byte[1 << 20];
    for (int i = 0; i < data.Length; i++)
    {
        // Text-like bytes with runs of alphabet characters, so the classifiers' slow paths run too.
        data[i] = (byte)(i % 97 < 40 ? Alphabet[(i * 7) % 32] : ' ' + (i % 61));
    }

    Encoding.ASCII.GetBytes(needles[0]).CopyTo(data, 1000);
    Encoding.ASCII.GetBytes(needles[2]).CopyTo(data, (data.Length / 2) - 10);
    Encoding.ASCII.GetBytes(needles[4]).CopyTo(data, data.Length - 32);
    string file = Path.Combine(directory, "out.bin");
    File.WriteAllBytes(file, data);

    using var listener = new JitListener();
    listener.WaitUntilEnabled();
    Sentinel.Begin();
    var scanner = new ReferenceScanner(NeedleSet.FromStrings(needles, engine));
    var import = new ImportReferenceScan(scanner);
    import.OnName("out.bin"u8);
    var fileScan = import.OnFile(data.Length);
    fileScan.OnRead(data.Length / 2, data.AsSpan(data.Length / 2));
    fileScan.OnRead(0, data.AsSpan(0, data.Length / 2));
    fileScan.Complete();
    var imported = import.Found;
    var scanned = scanner.ScanPath(file);
    listener.Flush();

    foreach (string method in listener.Methods)
    {
        Console.WriteLine($"jit {method}");
    }

    Console.WriteLine($"engine {scanner.Needles.Engine}");
    Console.WriteLine($"import {string.Join(',', imported)}");
    Console.WriteLine($"path {string.Join(',', scanned)}");
    Console.WriteLine("done");
    return 0;
}

static int Throughput(int size, int reps)
{
    var data = new byte[size];
    new Random(1).NextBytes(data);
    double best = double.MaxValue;
    for (int r = 0; r < reps; r++)
    {
        long started = Stopwatch.GetTimestamp();
        Blake3.Hash(data);
        best = Math.Min(best, Stopwatch.GetElapsedTime(started).TotalSeconds);
    }

    Console.WriteLine($"level {Blake3Backend.Best}");
    Console.WriteLine($"best {size / best / 1e9:F2} GB/s");
    return 0;
}

// The chunk compression alone (hash_many over whole chunks), this process's own kernels against the NativeAOT tool's
// kernels libraries (src/Kernels, given as PATH:LEVEL), interleaved round by round: best rate of each.
static unsafe int HashManyThroughput(int size, int reps, string[] libraries)
{
    var data = new byte[size];
    new Random(1).NextBytes(data);
    var output = new byte[size / 1024 * 32];
    var loaded = libraries.Select(l => (Name: Path.GetFileName(l[..l.LastIndexOf(':')]), Library: SimdKernelLibrary.Load(l[..l.LastIndexOf(':')], int.Parse(l[(l.LastIndexOf(':') + 1)..])))).ToArray();
    var best = new double[1 + loaded.Length];
    Array.Fill(best, double.MaxValue);
    CvWords key = Blake3.IVWords;
    fixed (byte* input = data)
    fixed (byte* o = output)
    {
        for (int r = 0; r < reps; r++)
        {
            long started = Stopwatch.GetTimestamp();
            Blake3Backend.HashMany(input, (nuint)(size / 1024), 16, in key, 0, true, 0, 1, 2, o, Blake3Backend.Own);
            best[0] = Math.Min(best[0], Stopwatch.GetElapsedTime(started).TotalSeconds);
            for (int i = 0; i < loaded.Length; i++)
            {
                started = Stopwatch.GetTimestamp();
                loaded[i].Library.HashMany(input, (nuint)(size / 1024), 16, (uint*)&key, 0, 1, 0, 1, 2, o);
                best[1 + i] = Math.Min(best[1 + i], Stopwatch.GetElapsedTime(started).TotalSeconds);
            }
        }
    }

    Console.WriteLine($"own {Blake3Backend.Own}: {size / best[0] / 1e9:F2} GB/s");
    for (int i = 0; i < loaded.Length; i++)
    {
        Console.WriteLine($"{loaded[i].Name}: {size / best[1 + i] / 1e9:F2} GB/s");
    }

    return 0;
}

static int CheckVectors(string path)
{
    using var document = JsonDocument.Parse(File.ReadAllBytes(path));
    var root = document.RootElement;
    byte[] key = Encoding.ASCII.GetBytes(root.GetProperty("key").GetString()!);
    string context = root.GetProperty("context_string").GetString()!;
    int checkedCount = 0;
    int failures = 0;
    foreach (var c in root.GetProperty("cases").EnumerateArray())
    {
        int length = c.GetProperty("input_len").GetInt32();
        var input = new byte[length];
        for (int i = 0; i < length; i++)
        {
            input[i] = (byte)(i % 251);
        }

        foreach (string kind in new[] { "hash", "keyed_hash", "derive_key" })
        {
            string expected = c.GetProperty(kind).GetString()!;
            var output = new byte[expected.Length / 2];
            switch (kind)
            {
                case "hash":
                    Blake3.Hash(input, output);
                    break;
                case "keyed_hash":
                    Blake3.KeyedHash(key, input, output);
                    break;
                default:
                    Blake3.DeriveKey(context, input, output);
                    break;
            }

            string actual = Convert.ToHexStringLower(output);
            if (actual != expected)
            {
                Console.WriteLine($"mismatch {kind} input_len={length}: expected {expected}, got {actual}");
                failures++;
            }

            checkedCount++;
        }
    }

    Console.WriteLine($"level {Blake3Backend.Best}");
    Console.WriteLine($"checked {checkedCount}");
    return failures == 0 ? 0 : 1;
}

internal sealed class JitListener : EventListener
{
    private const EventKeywords JitKeyword = (EventKeywords)0x10;
    private readonly ManualResetEventSlim enabled = new();
    private readonly ManualResetEventSlim sentinelSeen = new();
    private readonly List<string> methods = [];

    private bool recording;

    public IReadOnlyList<string> Methods
    {
        get
        {
            lock (methods)
            {
                return [.. methods];
            }
        }
    }

    public void WaitUntilEnabled()
    {
        // The runtime's events come from a dispatch thread; the first one seen means the session is live.
        Sentinel.Warm();
        if (!enabled.Wait(TimeSpan.FromSeconds(30)))
        {
            throw new InvalidOperationException("no JIT events from the runtime within 30 s");
        }
    }

    /// <summary>Waits until every event raised before the call has been delivered: a fresh method's JIT event comes last.</summary>
    public void Flush()
    {
        Sentinel.End();
        if (!sentinelSeen.Wait(TimeSpan.FromSeconds(30)))
        {
            throw new InvalidOperationException("the JIT event of the sentinel method did not arrive within 30 s");
        }
    }

    protected override void OnEventSourceCreated(EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
        {
            EnableEvents(source, EventLevel.Verbose, JitKeyword);
        }
    }

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (e.EventName != "MethodJittingStarted_V1" || e.Payload is null || e.PayloadNames is null)
        {
            return;
        }

        string ns = (string)e.Payload[e.PayloadNames.IndexOf("MethodNamespace")]!;
        string name = (string)e.Payload[e.PayloadNames.IndexOf("MethodName")]!;
        enabled.Set();
        // Events arrive in order: what lies between the two sentinels' JIT events was compiled for the hash.
        bool sentinel = ns.EndsWith(nameof(Sentinel), StringComparison.Ordinal);
        if (sentinel && name == nameof(Sentinel.Begin))
        {
            recording = true;
        }
        else if (sentinel && name == nameof(Sentinel.End))
        {
            recording = false;
            sentinelSeen.Set();
        }
        else if (recording)
        {
            lock (methods)
            {
                string signature = (string)e.Payload[e.PayloadNames.IndexOf("MethodSignature")]!;
                methods.Add($"{ns}.{name} {signature}");
            }
        }
    }
}

internal static class Sentinel
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void Warm() => GC.KeepAlive(null);

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void Begin() => GC.KeepAlive(null);

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void End() => GC.KeepAlive(null);
}
