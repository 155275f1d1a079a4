using System.Text.RegularExpressions;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>
/// The states a client reads and an operator acts on, as the docs name them: a launch's <c>phase</c> (which of them
/// carry a <c>next_attempt_at</c>, the runbook says) and an agent's <c>status</c> (the status mappings in docs/api.md).
/// A phase or status added, renamed or moved between "acted on" and "settled" fails here until the docs say so.
/// </summary>
public sealed partial class DocumentedStatesTests
{
    private static readonly string Root = Security.WebhookSignatureTests.RepositoryRoot();

    [Fact]
    public void The_runbook_names_the_phases_with_a_next_attempt_and_those_without_as_the_code_tells_them_apart()
    {
        var runbook = Flat(File.ReadAllText(Path.Combine(Root, "docs", "runbook.md")));
        // "`next_attempt_at` is set only while the service will act on the launch by itself, `a`, `b` or `c`, and null
        // once it is `d` or `e`)"
        var sentence = NextAttemptSentence().Match(runbook);
        Assert.True(sentence.Success, "the runbook no longer says which phases carry next_attempt_at");
        var documentedActive = DocumentedSettingsTests.CodeSpans(sentence.Groups["active"].Value);
        var documentedSettled = DocumentedSettingsTests.CodeSpans(sentence.Groups["settled"].Value);

        var active = new HashSet<string>();
        var settled = new HashSet<string>();
        foreach (var phase in Enum.GetValues<LaunchPhase>())
        {
            var launch = new RepositoryLaunch("acme/shop", "github", 42, "cursor_background_agent", 1, "fix-abc", null, true, null, phase, 1, null, DateTimeOffset.UnixEpoch, null, null, DateTimeOffset.UnixEpoch);
            (launch.IsAwaitingWork ? active : settled).Add(SnakeCaseNames<LaunchPhase>.Of(phase));
        }

        Assert.Equal(active.Order(), documentedActive.Order());
        Assert.Equal(settled.Order(), documentedSettled.Order());
    }

    [Fact]
    public void The_status_mappings_end_in_the_agent_statuses_the_api_writes_and_in_no_other()
    {
        var api = File.ReadAllText(Path.Combine(Root, "docs", "api.md"));
        var start = api.IndexOf("### Status mappings", StringComparison.Ordinal);
        Assert.True(start >= 0, "no '### Status mappings' in docs/api.md");
        var section = api[start..api.IndexOf("\n\n", start + "### Status mappings\n\n".Length, StringComparison.Ordinal)];
        // "`CREATING` → `pending`": the names after each arrow are the statuses the mappings end in.
        var mappedTo = Mapped().Matches(section).Select(arrow => arrow.Groups[1].Value).ToHashSet();
        var statuses = Enum.GetValues<CodingAgentStatus>().Select(status => status.WireName()).ToHashSet();

        Assert.Equal(statuses.Order(), mappedTo.Order());
    }

    private static string Flat(string markdown) => Whitespace().Replace(markdown, " ");

    [GeneratedRegex(@"`next_attempt_at` is set only while the service will act on the launch by itself, (?<active>[^;)]*?), and null once it is (?<settled>[^;)]*?)\)")]
    private static partial Regex NextAttemptSentence();

    [GeneratedRegex(@"→ `([a-z_]+)`")]
    private static partial Regex Mapped();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();
}
