using System.Runtime.CompilerServices;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>A chaining value or key as eight little-endian words.</summary>
[InlineArray(8)]
internal struct CvWords
{
    private uint _element;
}

/// <summary>One 64-byte message block.</summary>
[InlineArray(Blake3.BlockLength)]
internal struct BlockBytes
{
    private byte _element;
}
