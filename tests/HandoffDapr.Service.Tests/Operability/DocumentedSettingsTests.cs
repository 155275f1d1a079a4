using System.Globalization;
using System.Reflection;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using HandoffDapr.Core.Model;
using HandoffDapr.Service.Configuration;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>
/// The README's configuration table and docs/api.md's failure types are what operators and clients go by: each setting
/// the binder reads has a row with its default as the service applies it (the code's, and appsettings.json's where it
/// sets one), and each <c>failure_type</c> a client may see has a row; no row names what the code does not have. Nor do
/// the other docs and the run files (dapr.yaml, k8s/, the Dockerfile) name a setting the service does not read: a
/// renamed one would be ignored.
/// </summary>
public sealed partial class DocumentedSettingsTests
{
    private static readonly string Root = Security.WebhookSignatureTests.RepositoryRoot();

    [Fact]
    public void Every_setting_has_a_row_in_the_readme_and_every_row_is_a_setting()
    {
        var documented = DocumentedSettings().Select(setting => setting.Key).ToHashSet();
        var bound = BoundSettings().Select(setting => setting.Key).ToHashSet();

        Assert.Empty(bound.Except(documented).Order());
        Assert.Empty(documented.Except(bound).Order());
    }

    [Fact]
    public void Every_default_in_the_readme_is_the_one_the_service_applies()
    {
        var appsettings = JsonNode.Parse(File.ReadAllText(Path.Combine(Root, "src", "HandoffDapr.Service", "appsettings.json")))!;
        var bound = BoundSettings().ToDictionary(setting => setting.Key, setting => setting.Default);
        var wrong = new List<string>();
        foreach (var (key, documentedDefault) in DocumentedSettings())
        {
            if (documentedDefault is null || !bound.TryGetValue(key, out var codeDefault))
            {
                continue; // described in words ("the provider's"), or not a setting (the other test says so)
            }

            if (documentedDefault != codeDefault)
            {
                wrong.Add($"{key}: README '{documentedDefault}', code '{codeDefault}'");
            }

            // appsettings.json ships with the service: a value there is the default an operator gets.
            if (!key.Contains("{id}") && Lookup(appsettings, key) is { } shipped && Text(shipped) != documentedDefault)
            {
                wrong.Add($"{key}: README '{documentedDefault}', appsettings.json '{Text(shipped)}'");
            }
        }

        Assert.Empty(wrong);
    }

    [Fact]
    public void Every_failure_type_has_a_row_in_the_api_docs_and_every_row_is_a_failure_type()
    {
        var api = File.ReadAllText(Path.Combine(Root, "docs", "api.md"));
        var table = Section(api, "## Failure types");
        var documented = Row().Matches(table).SelectMany(row => CodeSpans(row.Groups[1].Value)).ToHashSet();
        var known = typeof(FailureTypes).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Where(field => field.IsLiteral).Select(field => (string)field.GetRawConstantValue()!).ToHashSet();

        Assert.Empty(known.Except(documented).Order());
        Assert.Empty(documented.Except(known).Order());
    }

    [Fact]
    public void Every_problem_type_the_service_answers_is_named_in_the_api_docs()
    {
        // Read from the code that makes them, literal by literal (comments left out): a new type needs its line.
        var code = string.Join('\n', File.ReadLines(Path.Combine(Root, "src", "HandoffDapr.Service", "Api", "Problems.cs"))
            .Where(line => !line.TrimStart().StartsWith("//", StringComparison.Ordinal)));
        var types = ProblemType().Matches(code).Select(literal => literal.Groups[1].Value).ToHashSet();
        var api = File.ReadAllText(Path.Combine(Root, "docs", "api.md"));

        Assert.Contains("unauthorized", types);
        Assert.Empty(types.Where(type => !api.Contains($"`{type}`", StringComparison.Ordinal)).Order());
    }

    [Fact]
    public void Every_setting_the_docs_and_manifests_name_is_one_the_service_reads()
    {
        var bound = BoundSettings().Select(setting => setting.Key).ToList();
        // SECURITY.md and the samples' steps name settings too, components/ beside k8s/ (their comments), and the
        // Dockerfile's ENV, which sets one in every container.
        var files = new[] { "README.md", "SECURITY.md", "dapr.yaml", "Dockerfile" }
            .Append(Path.Combine("samples", "README.md"))
            .Select(file => Path.Combine(Root, file))
            .Concat(Directory.GetFiles(Path.Combine(Root, "docs"), "*.md"))
            .Concat(Directory.GetFiles(Path.Combine(Root, "k8s"), "*.yaml"))
            .Concat(Directory.GetFiles(Path.Combine(Root, "components"), "*.yaml"));
        var unknown = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var file in files)
        {
            foreach (Match named in SettingName().Matches(File.ReadAllText(file)))
            {
                // Environment variables spell the sections with "__", and name integration ids where the docs write {id}.
                var key = WholeId().Replace(named.Value.Replace("__", ":", StringComparison.Ordinal), ":{id}");
                if (!bound.Any(setting => setting == key || setting.StartsWith(key + ":", StringComparison.Ordinal)))
                {
                    unknown.Add($"{Path.GetFileName(file)}: {named.Value}");
                }
            }
        }

        Assert.NotEmpty(bound);
        Assert.Empty(unknown);
    }

    /// <summary>The README's configuration rows as (key, default): the default null when it is described in words.</summary>
    private static IEnumerable<(string Key, string? Default)> DocumentedSettings()
    {
        var table = Section(File.ReadAllText(Path.Combine(Root, "README.md")), "## Configuration");
        foreach (Match row in Row().Matches(table))
        {
            // `Handoff:Launch:RetryBaseDelay` / `RetryFactor`: the later names are in the first one's section.
            var keys = CodeSpans(row.Groups[1].Value);
            if (keys.Count == 0 || !keys[0].StartsWith("Handoff:", StringComparison.Ordinal))
            {
                continue; // APP_API_TOKEN, OTEL_*: not the binder's
            }

            var section = keys[0][..keys[0].LastIndexOf(':')];
            var defaults = row.Groups[2].Value.Split(" / ");
            for (var i = 0; i < keys.Count; i++)
            {
                var key = i == 0 ? keys[0] : $"{section}:{keys[i]}";
                var cell = defaults.Length == keys.Count ? defaults[i].Trim() : null;
                yield return (key, cell switch
                {
                    "empty" or "—" => "",
                    { } text when CodeSpan().Match(text) is { Success: true } code && code.Value == text => code.Groups[1].Value,
                    _ => null,
                });
            }
        }
    }

    /// <summary>Every setting the binder reads into <see cref="HandoffOptions"/>, with its default as text.</summary>
    private static IEnumerable<(string Key, string Default)> BoundSettings()
    {
        IEnumerable<(string, string)> Walk(object options, string prefix)
        {
            foreach (var property in options.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(property => property.CanWrite))
            {
                var key = $"{prefix}:{property.Name}";
                var value = property.GetValue(options);
                if (property.PropertyType == typeof(Dictionary<string, IntegrationOptions>))
                {
                    foreach (var nested in Walk(new IntegrationOptions(), $"{key}:{{id}}"))
                    {
                        yield return nested;
                    }
                }
                else if (property.PropertyType.Namespace == typeof(HandoffOptions).Namespace && value is not null)
                {
                    foreach (var nested in Walk(value, key))
                    {
                        yield return nested;
                    }
                }
                else
                {
                    yield return (key, Text(value));
                }
            }
        }

        return Walk(new HandoffOptions(), HandoffOptions.SectionName);
    }

    private static string Text(object? value) => value switch
    {
        null => "",
        TimeSpan span => span.ToString("c", CultureInfo.InvariantCulture),
        bool flag => flag ? "true" : "false",
        IFormattable number => number.ToString(null, CultureInfo.InvariantCulture),
        JsonValue json when json.TryGetValue<bool>(out var flag) => flag ? "true" : "false",
        JsonValue json => json.ToString(),
        _ => value.ToString() ?? "",
    };

    private static JsonNode? Lookup(JsonNode root, string key) =>
        key.Split(':').Aggregate((JsonNode?)root, (node, name) => node is JsonObject container && container.TryGetPropertyValue(name, out var child) ? child : null);

    private static string Section(string markdown, string heading)
    {
        var start = markdown.IndexOf(heading + "\n", StringComparison.Ordinal);
        Assert.True(start >= 0, $"no '{heading}' in the document");
        var end = markdown.IndexOf("\n#", start + heading.Length, StringComparison.Ordinal);
        var section = markdown[start..(end < 0 ? markdown.Length : end)];
        // The rows below the table's header (whose first cell may itself be a code span: `failure_type`).
        var body = section.IndexOf("\n|---", StringComparison.Ordinal);
        Assert.True(body >= 0, $"'{heading}' has no table");
        return section[(body + 1)..];
    }

    /// <summary>A table row's first two cells, the first with a code span.</summary>
    [GeneratedRegex(@"^\| (`[^|]*) \| ([^|]*) \|", RegexOptions.Multiline)]
    private static partial Regex Row();

    /// <summary>The texts of the Markdown code spans in <paramref name="text"/>, in order (DocumentedStatesTests reads them too).</summary>
    internal static List<string> CodeSpans(string text) => CodeSpan().Matches(text).Select(span => span.Groups[1].Value).ToList();

    [GeneratedRegex("`([^`]+)`")]
    private static partial Regex CodeSpan();

    /// <summary>A setting's name as configuration (Handoff:Launch:PollInterval) or environment (Handoff__Launch__PollInterval) spells it.</summary>
    [GeneratedRegex(@"Handoff(?::|__)[A-Za-z0-9{}_:]*[A-Za-z0-9}]")]
    private static partial Regex SettingName();

    [GeneratedRegex(@":[0-9]+(?=:|$)")]
    private static partial Regex WholeId();

    /// <summary>A lower-case, hyphenated string literal: in Problems.cs, a problem type's last segment.</summary>
    [GeneratedRegex(@"""([a-z]+(?:-[a-z]+)*)""")]
    private static partial Regex ProblemType();
}
