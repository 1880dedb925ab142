using System.Collections.Immutable;
using System.Text;

namespace TvixFuseBuild.Build.Nix;

/// <summary>One output of a derivation: its store path (empty for content-addressed floating outputs) and, for a fixed output, its hash.</summary>
/// <param name="HashAlgorithm">Empty, or <c>[r:]ALGO</c> (<c>r:</c>: recursive, the hash of the NAR serialization).</param>
/// <param name="Hash">Empty, or the expected hash in hex.</param>
public sealed record DerivationOutput(string Name, string Path, string HashAlgorithm, string Hash);

/// <summary>An input derivation and the outputs of it the derivation uses.</summary>
public sealed record DerivationInput(string DrvPath, ImmutableArray<string> Outputs);

/// <summary>
/// A Nix derivation as Nix writes it in a <c>.drv</c> file (the ATerm
/// <c>Derive([outputs],[inputDrvs],[inputSrcs],system,builder,[args],[env])</c>).
/// </summary>
public sealed record Derivation(
    ImmutableArray<DerivationOutput> Outputs,
    ImmutableArray<DerivationInput> InputDerivations,
    ImmutableArray<string> InputSources,
    string System,
    string Builder,
    ImmutableArray<string> Arguments,
    ImmutableArray<KeyValuePair<string, string>> Environment)
{
    /// <summary>Parses the text of a <c>.drv</c> file.</summary>
    /// <exception cref="FormatException">It is not a derivation, saying where.</exception>
    public static Derivation Parse(ReadOnlySpan<byte> text)
    {
        var parser = new Parser(text);
        return parser.ParseDerivation();
    }

    public string? GetEnvironment(string key)
    {
        foreach (var pair in Environment)
        {
            if (pair.Key == key)
            {
                return pair.Value;
            }
        }

        return null;
    }

    /// <summary>True when the derivation has exactly one output, <c>out</c>, with a fixed hash.</summary>
    public bool IsFixedOutput => Outputs.Length == 1 && Outputs[0].Name == "out" && Outputs[0].Hash.Length > 0;

    private ref struct Parser(ReadOnlySpan<byte> text)
    {
        private readonly ReadOnlySpan<byte> _text = text;
        private int _position;

        public Derivation ParseDerivation()
        {
            Expect("Derive(");
            var outputs = List(static (ref Parser p) =>
            {
                p.Expect("(");
                string name = p.String();
                p.Expect(",");
                string path = p.String();
                p.Expect(",");
                string algo = p.String();
                p.Expect(",");
                string hash = p.String();
                p.Expect(")");
                return new DerivationOutput(name, path, algo, hash);
            });
            Expect(",");
            var inputDrvs = List(static (ref Parser p) =>
            {
                p.Expect("(");
                string path = p.String();
                p.Expect(",");
                var names = p.List(static (ref Parser q) => q.String());
                p.Expect(")");
                return new DerivationInput(path, names);
            });
            Expect(",");
            var inputSrcs = List(static (ref Parser p) => p.String());
            Expect(",");
            string system = String();
            Expect(",");
            string builder = String();
            Expect(",");
            var args = List(static (ref Parser p) => p.String());
            Expect(",");
            var env = List(static (ref Parser p) =>
            {
                p.Expect("(");
                string key = p.String();
                p.Expect(",");
                string value = p.String();
                p.Expect(")");
                return KeyValuePair.Create(key, value);
            });
            Expect(")");
            if (_position != _text.Length)
            {
                throw Error("text after the end of the derivation");
            }

            if (outputs.Length == 0)
            {
                throw new FormatException("the derivation has no outputs");
            }

            return new Derivation(outputs, inputDrvs, inputSrcs, system, builder, args, env);
        }

        private delegate T ElementParser<T>(ref Parser parser);

        private ImmutableArray<T> List<T>(ElementParser<T> element)
        {
            Expect("[");
            var items = ImmutableArray.CreateBuilder<T>();
            if (Peek() == ']')
            {
                _position++;
                return items.ToImmutable();
            }

            while (true)
            {
                items.Add(element(ref this));
                byte next = Peek();
                _position++;
                if (next == ']')
                {
                    return items.ToImmutable();
                }

                if (next != ',')
                {
                    _position--;
                    throw Error("expected ',' or ']'");
                }
            }
        }

        private string String()
        {
            Expect("\"");
            var bytes = new List<byte>();
            while (true)
            {
                if (_position >= _text.Length)
                {
                    throw Error("unterminated string");
                }

                byte c = _text[_position++];
                if (c == '"')
                {
                    break;
                }

                if (c == '\\')
                {
                    if (_position >= _text.Length)
                    {
                        throw Error("unterminated string");
                    }

                    c = _text[_position++];
                    c = c switch
                    {
                        (byte)'n' => (byte)'\n',
                        (byte)'r' => (byte)'\r',
                        (byte)'t' => (byte)'\t',
                        _ => c,
                    };
                }

                bytes.Add(c);
            }

            try
            {
                return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes.ToArray());
            }
            catch (DecoderFallbackException)
            {
                throw Error("a string that is not valid UTF-8");
            }
        }

        private byte Peek() => _position < _text.Length ? _text[_position] : throw Error("unexpected end");

        private void Expect(string token)
        {
            for (int i = 0; i < token.Length; i++)
            {
                if (_position + i >= _text.Length || _text[_position + i] != token[i])
                {
                    throw Error($"expected '{token}'");
                }
            }

            _position += token.Length;
        }

        private readonly FormatException Error(string what) => new($"not a Nix derivation: {what} at byte {_position}");
    }
}
