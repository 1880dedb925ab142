// Generated.g.cs does not exist in the source tree: the TvixBuild step writes it in a sandbox before compiling.
Console.WriteLine(CodegenSample.Generated.Greeting);
foreach (string message in CodegenSample.Generated.Messages)
{
    Console.WriteLine($"- {message}");
}
