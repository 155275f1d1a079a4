using System.Globalization;
using System.Text;
using System.Text.Json;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// Re-encodes JSON the way daprd does when it decodes a value into Go's <c>any</c> and marshals it again
/// (actor state values, CloudEvent envelopes): object keys sorted, no whitespace, HTML characters escaped,
/// and, unless decoded with <c>UseNumber</c>, every number passed through float64.
/// So a fake-sidecar round trip shows the same key order and number precision the app gets from a real one.
/// </summary>
internal static class GoJson
{
    public static byte[] Reencode(JsonElement value, bool preserveNumbers)
    {
        var sb = new StringBuilder();
        Write(sb, value, preserveNumbers);
        return Encoding.UTF8.GetBytes(sb.ToString());
    }

    /// <summary>
    /// Go's encoding/json field lookup into a struct: exact name first, else case-insensitive; a later
    /// matching member overwrites an earlier one.
    /// </summary>
    public static bool TryGetField(JsonElement obj, string name, out JsonElement value)
    {
        value = default;
        if (obj.ValueKind != JsonValueKind.Object)
        {
            return false;
        }

        var found = false;
        foreach (var p in obj.EnumerateObject())
        {
            if (string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase))
            {
                value = p.Value;
                found = true;
            }
        }

        return found;
    }

    /// <summary>A string field (Go-style lookup), or "" when absent, null or not a string.</summary>
    public static string StringField(JsonElement obj, string name) =>
        TryGetField(obj, name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() ?? "" : "";

    public static string Quote(string s)
    {
        var sb = new StringBuilder(s.Length + 2);
        WriteString(sb, s);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, JsonElement e, bool preserveNumbers)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                // Go map: a repeated key keeps its last value; keys are sorted byte-wise (UTF-8 order = ordinal for BMP).
                var props = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
                foreach (var p in e.EnumerateObject())
                {
                    props[p.Name] = p.Value;
                }

                sb.Append('{');
                var first = true;
                foreach (var key in props.Keys.OrderBy(k => k, StringComparer.Ordinal))
                {
                    if (!first)
                    {
                        sb.Append(',');
                    }

                    first = false;
                    WriteString(sb, key);
                    sb.Append(':');
                    Write(sb, props[key], preserveNumbers);
                }

                sb.Append('}');
                break;
            case JsonValueKind.Array:
                sb.Append('[');
                var firstItem = true;
                foreach (var item in e.EnumerateArray())
                {
                    if (!firstItem)
                    {
                        sb.Append(',');
                    }

                    firstItem = false;
                    Write(sb, item, preserveNumbers);
                }

                sb.Append(']');
                break;
            case JsonValueKind.String:
                WriteString(sb, e.GetString()!);
                break;
            case JsonValueKind.Number:
                sb.Append(preserveNumbers ? e.GetRawText() : FormatFloat64(e.GetDouble()));
                break;
            case JsonValueKind.True:
                sb.Append("true");
                break;
            case JsonValueKind.False:
                sb.Append("false");
                break;
            default:
                sb.Append("null");
                break;
        }
    }

    // encoding/json encodeState.string with escapeHTML (json.Marshal's default).
    private static void WriteString(StringBuilder sb, string s)
    {
        const string hex = "0123456789abcdef";
        sb.Append('"');
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '<' or '>' or '&' or '\u2028' or '\u2029' or < ' ':
                    sb.Append("\\u").Append(hex[c >> 12]).Append(hex[(c >> 8) & 0xF]).Append(hex[(c >> 4) & 0xF]).Append(hex[c & 0xF]);
                    break;
                default: sb.Append(c); break;
            }
        }

        sb.Append('"');
    }

    // encoding/json floatEncoder: 'f' format for 1e-6 <= |f| < 1e21, else 'e' with a 1-or-more-digit exponent ("1e+21", "1e-7").
    internal static string FormatFloat64(double f)
    {
        if (f == 0)
        {
            return double.IsNegative(f) ? "-0" : "0";
        }

        var (negative, digits, exponent) = ShortestDigits(f); // value = 0.d1d2d3... × 10^exponent
        var abs = Math.Abs(f);
        var sb = new StringBuilder();
        if (negative)
        {
            sb.Append('-');
        }

        if (abs < 1e-6 || abs >= 1e21)
        {
            sb.Append(digits[0]);
            if (digits.Length > 1)
            {
                sb.Append('.').Append(digits, 1, digits.Length - 1);
            }

            var exp = exponent - 1;
            sb.Append('e').Append(exp < 0 ? '-' : '+');
            // strconv writes at least two exponent digits and encoding/json trims "e-07" to "e-7"; positive exponents here are >= 21.
            sb.Append(Math.Abs(exp).ToString(CultureInfo.InvariantCulture));
            return sb.ToString();
        }

        if (exponent <= 0)
        {
            sb.Append("0.").Append('0', -exponent).Append(digits);
        }
        else if (exponent >= digits.Length)
        {
            sb.Append(digits).Append('0', exponent - digits.Length);
        }
        else
        {
            sb.Append(digits, 0, exponent).Append('.').Append(digits, exponent, digits.Length - exponent);
        }

        return sb.ToString();
    }

    private static (bool Negative, string Digits, int Exponent) ShortestDigits(double f)
    {
        // "R" is the shortest round-trip representation on .NET Core 3.0+, e.g. "1.5E-07", "123.456", "1E+21".
        var r = f.ToString("R", CultureInfo.InvariantCulture);
        var negative = r.StartsWith('-');
        if (negative)
        {
            r = r[1..];
        }

        var exp = 0;
        var ePos = r.IndexOfAny(['E', 'e']);
        if (ePos >= 0)
        {
            exp = int.Parse(r[(ePos + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            r = r[..ePos];
        }

        var dot = r.IndexOf('.');
        var intLen = dot >= 0 ? dot : r.Length;
        var all = r.Replace(".", "", StringComparison.Ordinal);
        var lead = 0;
        while (lead < all.Length - 1 && all[lead] == '0')
        {
            lead++;
        }

        var digits = all[lead..].TrimEnd('0');
        if (digits.Length == 0)
        {
            digits = "0";
        }

        return (negative, digits, intLen - lead + exp);
    }
}

/// <summary>Builds a JSON object the way Go marshals a <c>map[string]any</c>: members sorted by key.</summary>
internal sealed class GoJsonObject
{
    private readonly SortedDictionary<string, string> members = new(StringComparer.Ordinal);

    public bool Contains(string key) => members.ContainsKey(key);

    public GoJsonObject SetString(string key, string value)
    {
        members[key] = GoJson.Quote(value);
        return this;
    }

    /// <summary>Sets a member to already-encoded JSON.</summary>
    public GoJsonObject SetRaw(string key, string json)
    {
        members[key] = json;
        return this;
    }

    public string? GetRaw(string key) => members.TryGetValue(key, out var v) ? v : null;

    public byte[] ToUtf8() => System.Text.Encoding.UTF8.GetBytes(ToString());

    public override string ToString() =>
        "{" + string.Join(",", members.Select(m => GoJson.Quote(m.Key) + ":" + m.Value)) + "}";
}
