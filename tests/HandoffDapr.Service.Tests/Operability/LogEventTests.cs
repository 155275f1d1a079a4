using System.Text.RegularExpressions;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>
/// Log lines are found by name in dashboards and in the runbook: every source-generated log line in src/ carries an
/// explicit EventName (without one its name is the method's, which changes with a rename) and an id no other line has.
/// </summary>
public sealed partial class LogEventTests
{
    [Fact]
    public void Every_log_line_has_an_event_name_and_an_id_of_its_own()
    {
        var source = Path.Combine(Security.WebhookSignatureTests.RepositoryRoot(), "src");
        var attributes = Directory.EnumerateFiles(source, "*.cs", SearchOption.AllDirectories)
            .Where(file => !file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"))
            .SelectMany(file => LoggerMessage().Matches(File.ReadAllText(file)).Select(match => (File: Path.GetFileName(file), Text: match.Value)))
            .ToList();

        Assert.True(attributes.Count > 40, $"only {attributes.Count} log lines found: the pattern no longer matches the source");
        Assert.Empty(attributes.Where(attribute => !attribute.Text.Contains("EventName = ")).Select(attribute => $"{attribute.File}: {attribute.Text}"));
        var ids = attributes.Select(attribute => EventId().Match(attribute.Text).Groups[1].Value).ToList();
        Assert.Empty(ids.GroupBy(id => id).Where(group => group.Count() > 1).Select(group => group.Key));
    }

    /// <summary>
    /// A line at warning or above is one an operator is paged by or asked about: the runbook (or the README, or
    /// docs/dapr.md) must say what it means and what to do, by its event name. Twenty-two of them were named nowhere
    /// (LaunchRoundDropped, WakeRetryNotRegistered, AgentNotFollowed, SidecarMissing, WebhookRejected, …).
    /// </summary>
    [Fact]
    public void Every_warning_and_error_log_event_is_explained_in_the_docs_by_its_name()
    {
        var root = Security.WebhookSignatureTests.RepositoryRoot();
        var docs = string.Join('\n', new[] { "README.md", Path.Combine("docs", "runbook.md"), Path.Combine("docs", "dapr.md") }
            .Select(file => File.ReadAllText(Path.Combine(root, file))));
        var names = Directory.EnumerateFiles(Path.Combine(root, "src"), "*.cs", SearchOption.AllDirectories)
            .Where(file => !file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"))
            .SelectMany(file => LoggerMessage().Matches(File.ReadAllText(file)))
            .Where(match => Regex.IsMatch(match.Value, @"Level = LogLevel\.(Warning|Error|Critical)"))
            .Select(match => Regex.Match(match.Value, "EventName = \"([A-Za-z]+)\"").Groups[1].Value)
            .ToList();

        Assert.True(names.Count > 30, $"only {names.Count} warnings found: the pattern no longer matches the source");
        Assert.Empty(names.Where(name => !docs.Contains($"`{name}`", StringComparison.Ordinal)).Order());
    }

    [GeneratedRegex(@"\[LoggerMessage\([^\]]*\)\]", RegexOptions.Singleline)]
    private static partial Regex LoggerMessage();

    [GeneratedRegex(@"EventId = (\d+)")]
    private static partial Regex EventId();
}
