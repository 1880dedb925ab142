namespace TvixFuseBuild.Build.Service;

/// <summary>
/// No build result from the builders, for a reason of theirs rather than the build's: none could be reached, one
/// refused the call (authentication, an unknown service), or one answered with something that does not fit the request.
/// </summary>
public sealed class BuilderException(string message, Exception? inner = null) : Exception(message, inner);
