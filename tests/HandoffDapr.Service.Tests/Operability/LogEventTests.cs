using System.Text.RegularExpressions;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>
/// Log lines are found by name in dashboards and in the runbook: every source-generated log line in src/ carries an
/// explicit EventName (without one its name is the method's, which changes with a rename) and an id no other line has.
/// </summary>
public sealed partial class LogEventTests
{
    /// <summary>Where an operator reads what a log event means (the runbook's table of ids aside).</summary>
    private static readonly string[] ExplainingDocuments = ["README.md", Path.Combine("docs", "api.md"), Path.Combine("docs", "runbook.md"), Path.Combine("docs", "dapr.md")];

    [Fact]
    public void Every_log_line_has_an_event_name_and_an_id_of_its_own()
    {
        var attributes = EventsInSource();

        Assert.True(attributes.Count > 40, $"only {attributes.Count} log lines found: the pattern no longer matches the source");
        Assert.Empty(attributes.Where(attribute => !attribute.Attribute.Contains("EventName = ")).Select(attribute => $"{attribute.File}: {attribute.Attribute}"));
        // Without an EventId a line has none of its own (an empty id is unique while only one line lacks it).
        Assert.Empty(attributes.Where(attribute => attribute.Id.Length == 0)
            .Select(attribute => $"{attribute.File}: {attribute.Attribute}"));
        var ids = attributes.Select(attribute => attribute.Id).ToList();
        Assert.Empty(ids.GroupBy(id => id).Where(group => group.Count() > 1).Select(group => group.Key));
    }

    /// <summary>
    /// A line at warning or above is one an operator is paged by or asked about: the runbook (or the README, docs/api.md
    /// or docs/dapr.md) must say what it means and what to do, by its event name. Twenty-two of them were named nowhere
    /// (LaunchRoundDropped, WakeRetryNotRegistered, AgentNotFollowed, SidecarMissing, WebhookRejected, …).
    /// </summary>
    [Fact]
    public void Every_warning_and_error_log_event_is_explained_in_the_docs_by_its_name()
    {
        var root = Security.WebhookSignatureTests.RepositoryRoot();
        // Without the runbook's table of ids, which lists every event: named there, an event is not yet explained.
        var docs = string.Join('\n', ExplainingDocuments.Select(file => File.ReadAllText(Path.Combine(root, file))))
            .Replace(Section(File.ReadAllText(Path.Combine(root, "docs", "runbook.md")), IdsHeading), string.Empty, StringComparison.Ordinal);
        var names = EventsInSource()
            .Where(logged => logged.Level is "Warning" or "Error" or "Critical")
            .Select(logged => logged.Name)
            .ToList();

        Assert.True(names.Count > 30, $"only {names.Count} warnings found: the pattern no longer matches the source");
        Assert.Empty(names.Where(name => !docs.Contains($"`{name}`", StringComparison.Ordinal)).Order());
    }

    /// <summary>
    /// The other way round: a log event the docs send an operator to (in the runbook's table of warnings, as "log event
    /// `X`", "logged `X`", or with its level or id in brackets) exists in src/, at the level and with the id they give. A
    /// line renamed, or made an error, would otherwise leave the runbook naming a line nobody finds, or the wrong level.
    /// </summary>
    [Fact]
    public void Every_log_event_the_docs_name_exists_with_the_level_and_id_they_give()
    {
        var root = Security.WebhookSignatureTests.RepositoryRoot();
        var events = EventsInSource().ToDictionary(logged => logged.Name, logged => (logged.Id, logged.Level));
        var wrong = new List<string>();
        void Check(string file, string name, string? level, string? id)
        {
            if (!events.TryGetValue(name, out var logged))
            {
                wrong.Add($"{file}: `{name}` is no log event in src/");
            }
            else if (level is not null && !string.Equals(level, logged.Level, StringComparison.OrdinalIgnoreCase))
            {
                wrong.Add($"{file}: `{name}` is said to be {level}, it is logged at {logged.Level}");
            }
            else if (id is not null && id != logged.Id)
            {
                wrong.Add($"{file}: `{name}` is said to be {id}, its id is {logged.Id}");
            }
        }

        var checkedNames = 0;
        foreach (var file in ExplainingDocuments.Append("SECURITY.md"))
        {
            var text = File.ReadAllText(Path.Combine(root, file));
            // "log event `X`", "log events `X`, `Y`", "logged `X`", "logs `X`", "logged at start as `X`", "or `Y`" after them.
            foreach (Match mention in Regex.Matches(text, @"(?:log events?|logged(?: at \w+ as)?|logs|logging) \(?((?:`[A-Z][A-Za-z]+`(?:,? (?:and |or )?)?)+)"))
            {
                foreach (Match name in Regex.Matches(mention.Groups[1].Value, "`([A-Za-z]+)`"))
                {
                    Check(file, name.Groups[1].Value, null, null);
                    checkedNames++;
                }
            }

            // "`X` (warning", "`X` (4203, warning", "`X` (4201)". The \b is the level's own: after "(4201)" a trailing
            // one failed, and the match fell back to one without the id, so an id alone in brackets was never checked.
            foreach (Match bracketed in Regex.Matches(text, @"`([A-Z][A-Za-z]+)` \((?:(\d{4})(?:, |\)))?(?:(information|warning|error|critical|debug)\b)?"))
            {
                if (bracketed.Groups[2].Success || bracketed.Groups[3].Success)
                {
                    Check(file, bracketed.Groups[1].Value, bracketed.Groups[3].Success ? bracketed.Groups[3].Value : null, bracketed.Groups[2].Success ? bracketed.Groups[2].Value : null);
                    checkedNames++;
                }
            }
        }

        // The runbook's table of warnings and errors: | `X` | level | … (a row may name two events).
        var runbook = File.ReadAllText(Path.Combine(root, "docs", "runbook.md"));
        var table = runbook[runbook.IndexOf("## Other warnings and errors in the log", StringComparison.Ordinal)..];
        table = table[..table.IndexOf("\n## ", StringComparison.Ordinal)];
        var rows = Regex.Matches(table, @"^\| ((?:`[A-Za-z]+`(?:, )?)+) \| (\w+) \|", RegexOptions.Multiline);
        Assert.True(rows.Count > 25, $"only {rows.Count} rows found in the runbook's table of warnings: the pattern no longer matches it");
        foreach (Match row in rows)
        {
            foreach (Match name in Regex.Matches(row.Groups[1].Value, "`([A-Za-z]+)`"))
            {
                Check("docs/runbook.md (table)", name.Groups[1].Value, row.Groups[2].Value, null);
            }
        }

        Assert.True(checkedNames > 30, $"only {checkedNames} log events named in the docs' prose: the patterns no longer match it");
        Assert.Empty(wrong);
    }

    /// <summary>
    /// A line gives its event by id alone (the JSON console writes <c>EventId</c> as a number, without the name), so the
    /// names the docs use are of no help in the log without the runbook's table of ids: it lists every event in src/,
    /// with its id and level, and no other.
    /// </summary>
    [Fact]
    public void The_runbooks_table_of_log_event_ids_lists_every_event_with_its_id_and_level()
    {
        var root = Security.WebhookSignatureTests.RepositoryRoot();
        var inCode = EventsInSource()
            .Select(logged => $"{logged.Id} {logged.Name} {logged.Level.ToLowerInvariant()}")
            .Order(StringComparer.Ordinal)
            .ToList();
        var table = Section(File.ReadAllText(Path.Combine(root, "docs", "runbook.md")), IdsHeading);
        var inTable = Regex.Matches(table, @"^\| (\d+) \| `([A-Za-z]+)` \| (\w+) \|", RegexOptions.Multiline)
            .Select(row => $"{row.Groups[1].Value} {row.Groups[2].Value} {row.Groups[3].Value}")
            .Order(StringComparer.Ordinal)
            .ToList();

        Assert.True(inCode.Count > 40, $"only {inCode.Count} log lines found: the pattern no longer matches the source");
        Assert.Equal(inCode, inTable);
    }

    /// <summary>
    /// The runbook's table of warnings and errors says it lists every line at warning and above, those other sections
    /// explain included: an operator paged by one looks it up there by name. BindingRefused and LaunchRoundNotRecorded,
    /// explained only in the table of phases, had no row.
    /// </summary>
    [Fact]
    public void The_runbooks_table_of_warnings_and_errors_has_a_row_for_every_event_at_warning_and_above()
    {
        var root = Security.WebhookSignatureTests.RepositoryRoot();
        var table = Section(File.ReadAllText(Path.Combine(root, "docs", "runbook.md")), WarningsHeading);
        // A row's first cell names one event or several ("`ProviderListExhausted`, `ProviderReadsIncomplete`").
        var rows = Regex.Matches(table, @"^\| ((?:`[A-Za-z]+`(?:, )?)+) \|", RegexOptions.Multiline)
            .SelectMany(row => Regex.Matches(row.Groups[1].Value, "`([A-Za-z]+)`").Select(name => name.Groups[1].Value))
            .ToHashSet(StringComparer.Ordinal);
        var warnings = EventsInSource()
            .Where(logged => logged.Level is "Warning" or "Error" or "Critical")
            .Select(logged => logged.Name)
            .ToList();

        Assert.True(warnings.Count > 30, $"only {warnings.Count} warnings found: the pattern no longer matches the source");
        Assert.Empty(warnings.Where(name => !rows.Contains(name)).Order(StringComparer.Ordinal));
    }

    private const string WarningsHeading = "## Other warnings and errors in the log";

    private const string IdsHeading = "## Log event ids";

    /// <summary>A section of a markdown file, from its heading to the next of its level.</summary>
    private static string Section(string text, string heading)
    {
        var start = text.IndexOf(heading + "\n", StringComparison.Ordinal);
        Assert.True(start >= 0, $"no '{heading}' section");
        var end = text.IndexOf("\n## ", start + heading.Length, StringComparison.Ordinal);
        return end < 0 ? text[start..] : text[start..end];
    }

    /// <summary>Every <c>[LoggerMessage]</c> attribute in src/, with its id, event name and level as written (empty when absent).</summary>
    private static List<LoggedEvent> EventsInSource() =>
        Directory.EnumerateFiles(Path.Combine(Security.WebhookSignatureTests.RepositoryRoot(), "src"), "*.cs", SearchOption.AllDirectories)
            .Where(file => !file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"))
            .SelectMany(file => LoggerMessage().Matches(File.ReadAllText(file)).Select(match => new LoggedEvent(
                Path.GetFileName(file),
                match.Value,
                EventId().Match(match.Value).Groups[1].Value,
                EventName().Match(match.Value).Groups[1].Value,
                Level().Match(match.Value).Groups[1].Value)))
            .ToList();

    private sealed record LoggedEvent(string File, string Attribute, string Id, string Name, string Level);

    [GeneratedRegex(@"\[LoggerMessage\([^\]]*\)\]", RegexOptions.Singleline)]
    private static partial Regex LoggerMessage();

    [GeneratedRegex(@"EventId = (\d+)")]
    private static partial Regex EventId();

    [GeneratedRegex("EventName = \"([A-Za-z]+)\"")]
    private static partial Regex EventName();

    [GeneratedRegex(@"Level = LogLevel\.(\w+)")]
    private static partial Regex Level();
}
