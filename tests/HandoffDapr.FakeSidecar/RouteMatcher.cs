using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// Evaluates routing-rule <c>match</c> expressions against a CloudEvent. daprd uses full CEL
/// (pkg/expr); this fake understands the common subset: <c>event.a.b == "x"</c> / <c>!=</c> against a string,
/// number or boolean literal, joined by <c>&amp;&amp;</c> or <c>||</c> (no parentheses). Anything else throws
/// <see cref="NotSupportedException"/> so a test never silently routes wrong.
/// </summary>
internal static partial class RouteMatcher
{
    [GeneratedRegex("""^\s*event((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*(==|!=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|-?[0-9]+(?:\.[0-9]+)?|true|false)\s*$""")]
    private static partial Regex Comparison();

    public static bool Matches(string expression, JsonElement cloudEvent)
    {
        foreach (var disjunct in expression.Split("||"))
        {
            if (disjunct.Split("&&").All(term => EvaluateTerm(term, cloudEvent, expression)))
            {
                return true;
            }
        }

        return false;
    }

    private static bool EvaluateTerm(string term, JsonElement ce, string expression)
    {
        var t = term.Trim();
        if (t == "true")
        {
            return true;
        }

        if (t == "false")
        {
            return false;
        }

        var m = Comparison().Match(t);
        if (!m.Success)
        {
            throw new NotSupportedException($"FakeDaprSidecar cannot evaluate the CEL routing rule '{expression}'.");
        }

        var current = ce;
        var found = true;
        foreach (var name in m.Groups[1].Value.Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            if (current.ValueKind != JsonValueKind.Object || !current.TryGetProperty(name, out current))
            {
                found = false;
                break;
            }
        }

        var literal = m.Groups[3].Value;
        var equal = found && literal switch
        {
            "true" => current.ValueKind == JsonValueKind.True,
            "false" => current.ValueKind == JsonValueKind.False,
            _ when literal[0] is '"' or '\'' => current.ValueKind == JsonValueKind.String
                && current.GetString() == Regex.Unescape(literal[1..^1]),
            _ => current.ValueKind == JsonValueKind.Number
                && current.GetDouble() == double.Parse(literal, CultureInfo.InvariantCulture),
        };
        return m.Groups[2].Value == "==" ? equal : !equal;
    }
}
