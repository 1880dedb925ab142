using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace TvixFuseBuild.Build.Refscan;

/// <summary>
/// Arbitrary needles: an Aho–Corasick automaton over byte classes (each byte that occurs in a needle is its own
/// class; all others share class 0). When states × classes fits <see cref="DenseBudget"/> the automaton is a dense
/// DFA (one table load per byte); otherwise the trie's sparse transitions are followed with failure links.
/// A state that ends a needle, itself or through a suffix, is flagged in the transition table (sign bit), so the
/// inner loop tests one sign per byte.
/// </summary>
internal sealed class AhoCorasickSearcher : NeedleSearcher
{
    /// <summary>Largest dense table, in entries (4 bytes each).</summary>
    internal const int DenseBudget = 1 << 22;

    private const int MatchFlag = int.MinValue;

    private readonly byte[] _classOf = new byte[256];
    private readonly SearchValues<byte> _startBytes;   // first bytes of the needles: where a match can begin
    private readonly int _stride;          // number of byte classes
    private readonly int[] _outputs;       // per state: first needle ending exactly here, index into _outputList, or -1
    private readonly int[] _outputList;    // (needle, next) pairs flattened
    private readonly int[] _dictionaryLink; // per state: nearest proper suffix state that ends a needle, or -1

    // Dense form: _delta[state * stride + class] = next state * stride, | MatchFlag when the next state reports.
    private readonly int[]? _delta;

    // Sparse form: per state, its children's classes and states (sorted by class); the root's row is dense.
    private readonly int[]? _childStart;
    private readonly byte[]? _childClass;
    private readonly int[]? _childState;
    private readonly int[]? _fail;
    private readonly int[]? _rootRow;
    private readonly bool[]? _reports;

    private AhoCorasickSearcher(IReadOnlyList<byte[]> needles, bool forceSparse)
    {
        // Byte classes.
        var used = new bool[256];
        foreach (var needle in needles)
        {
            foreach (byte b in needle)
            {
                used[b] = true;
            }
        }

        int classes = 1;
        for (int b = 0; b < 256; b++)
        {
            if (used[b])
            {
                _classOf[b] = (byte)classes++;
            }
        }

        // 256 used bytes make 257 classes, which do not fit a byte: then byte b is class b and no class is spare.
        if (classes > 256)
        {
            for (int b = 0; b < 256; b++)
            {
                _classOf[b] = (byte)b;
            }

            classes = 256;
        }

        _stride = classes;
        _startBytes = SearchValues.Create([.. needles.Where(n => n.Length > 0).Select(n => n[0]).Distinct()]);

        // The trie, built with a dictionary of children per state.
        var children = new List<Dictionary<byte, int>> { new() };
        var ends = new List<List<int>?> { null };
        for (int i = 0; i < needles.Count; i++)
        {
            if (needles[i].Length == 0)
            {
                continue;
            }

            int state = 0;
            foreach (byte b in needles[i])
            {
                byte c = _classOf[b];
                if (!children[state].TryGetValue(c, out int next))
                {
                    next = children.Count;
                    children[state][c] = next;
                    children.Add([]);
                    ends.Add(null);
                }

                state = next;
            }

            (ends[state] ??= []).Add(i);
        }

        int states = children.Count;
        _outputs = new int[states];
        var outputList = new List<int>();
        for (int s = 0; s < states; s++)
        {
            _outputs[s] = -1;
            if (ends[s] is { } list)
            {
                // Linked list of the needles ending at s, in reverse (order does not matter).
                foreach (int needle in list)
                {
                    outputList.Add(needle);
                    outputList.Add(_outputs[s]);
                    _outputs[s] = outputList.Count - 2;
                }
            }
        }

        _outputList = [.. outputList];

        // Failure and dictionary links, breadth first.
        var fail = new int[states];
        _dictionaryLink = new int[states];
        Array.Fill(_dictionaryLink, -1);
        var queue = new Queue<int>();
        foreach (int child in children[0].Values)
        {
            fail[child] = 0;
            queue.Enqueue(child);
        }

        var order = new List<int> { 0 };
        while (queue.Count > 0)
        {
            int s = queue.Dequeue();
            order.Add(s);
            foreach (var (c, child) in children[s])
            {
                int f = fail[s];
                while (f != 0 && !children[f].ContainsKey(c))
                {
                    f = fail[f];
                }

                fail[child] = children[f].TryGetValue(c, out int target) && target != child ? target : 0;
                int link = fail[child];
                _dictionaryLink[child] = _outputs[link] >= 0 ? link : _dictionaryLink[link];
                queue.Enqueue(child);
            }
        }

        bool Reports(int s) => _outputs[s] >= 0 || _dictionaryLink[s] >= 0;

        if (!forceSparse && (long)states * classes <= DenseBudget)
        {
            _delta = new int[states * classes];
            foreach (int s in order)
            {
                for (int c = 0; c < classes; c++)
                {
                    int next;
                    if (children[s].TryGetValue((byte)c, out int child))
                    {
                        next = child;
                    }
                    else if (s == 0)
                    {
                        next = 0;
                    }
                    else
                    {
                        // The failure state is shallower, so its row is already complete.
                        next = (_delta[fail[s] * classes + c] & ~MatchFlag) / classes;
                    }

                    _delta[s * classes + c] = (next * classes) | (Reports(next) ? MatchFlag : 0);
                }
            }
        }
        else
        {
            _fail = fail;
            _childStart = new int[states + 1];
            var childClass = new List<byte>();
            var childState = new List<int>();
            for (int s = 0; s < states; s++)
            {
                _childStart[s] = childClass.Count;
                foreach (var (c, child) in children[s].OrderBy(kv => kv.Key))
                {
                    childClass.Add(c);
                    childState.Add(child);
                }
            }

            _childStart[states] = childClass.Count;
            _childClass = [.. childClass];
            _childState = [.. childState];
            _rootRow = new int[classes];
            foreach (var (c, child) in children[0])
            {
                _rootRow[c] = child;
            }

            _reports = new bool[states];
            for (int s = 0; s < states; s++)
            {
                _reports[s] = Reports(s);
            }
        }

        States = states;
    }

    public int States { get; }

    public bool IsDense => _delta is not null;

    public static AhoCorasickSearcher Create(IReadOnlyList<byte[]> needles, bool forceSparse = false) => new(needles, forceSparse);

    public override void Search(ReadOnlySpan<byte> haystack, NeedleHits hits)
    {
        if (States == 1)
        {
            return;
        }

        if (_delta is not null)
        {
            SearchDense(haystack, hits);
        }
        else
        {
            SearchSparse(haystack, hits);
        }
    }

    /// <summary>
    /// One table load per byte, 64 bytes at a time. Between those steps, when the automaton is in its start state,
    /// a vectorized IndexOfAny jumps to the next byte that can begin a needle: long stretches without one (zeros,
    /// much binary data) are skipped at memory speed, and dense text pays one call per 64 bytes.
    /// </summary>
    private void SearchDense(ReadOnlySpan<byte> haystack, NeedleHits hits)
    {
        ref int delta = ref MemoryMarshal.GetArrayDataReference(_delta!);
        ref byte classOf = ref MemoryMarshal.GetArrayDataReference(_classOf);
        ref byte start = ref MemoryMarshal.GetReference(haystack);
        int n = haystack.Length;
        int state = 0;
        int i = 0;
        while (i < n)
        {
            if (state == 0)
            {
                int skip = haystack[i..].IndexOfAny(_startBytes);
                if (skip < 0)
                {
                    return;
                }

                i += skip;
            }

            for (int end = Math.Min(n, i + 64); i < end; i++)
            {
                int next = Unsafe.Add(ref delta, state + Unsafe.Add(ref classOf, Unsafe.Add(ref start, i)));
                state = next & ~MatchFlag;
                if (next < 0)
                {
                    Report(state / _stride, hits);
                }
            }
        }
    }

    private void SearchSparse(ReadOnlySpan<byte> haystack, NeedleHits hits)
    {
        int state = 0;
        foreach (byte b in haystack)
        {
            byte c = _classOf[b];
            while (true)
            {
                if (state == 0)
                {
                    state = _rootRow![c];
                    break;
                }

                int child = FindChild(state, c);
                if (child >= 0)
                {
                    state = child;
                    break;
                }

                state = _fail![state];
            }

            if (_reports![state])
            {
                Report(state, hits);
            }
        }
    }

    private int FindChild(int state, byte c)
    {
        int lo = _childStart![state], hi = _childStart[state + 1];
        var classes = _childClass.AsSpan(lo, hi - lo);
        int i = classes.BinarySearch(c);
        return i >= 0 ? _childState![lo + i] : -1;
    }

    private void Report(int state, NeedleHits hits)
    {
        for (int s = _outputs[state] >= 0 ? state : _dictionaryLink[state]; s >= 0; s = _dictionaryLink[s])
        {
            for (int o = _outputs[s]; o >= 0; o = _outputList[o + 1])
            {
                hits.Add(_outputList[o]);
            }
        }
    }
}
