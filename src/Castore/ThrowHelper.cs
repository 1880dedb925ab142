using System.Diagnostics.CodeAnalysis;

namespace TvixFuseBuild.Castore;

// Throwing from small non-inlined methods keeps the callers' hot paths small.
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void ThrowInvalidDigestLength(int length) =>
        throw new ArgumentException($"invalid digest length: {length} bytes, a BLAKE3 digest has {B3Digest.Length}");

    [DoesNotReturn]
    public static void ThrowDestinationTooShort() =>
        throw new ArgumentException("destination is too short");

    [DoesNotReturn]
    public static void ThrowArgumentOutOfRange(string paramName) =>
        throw new ArgumentOutOfRangeException(paramName);

    [DoesNotReturn]
    public static void ThrowObjectDisposed(object instance) =>
        throw new ObjectDisposedException(instance.GetType().Name);

    [DoesNotReturn]
    public static void ThrowInvalidOperation(string message) =>
        throw new InvalidOperationException(message);
}
