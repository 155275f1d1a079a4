using System.Text;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Providers.Cursor;

namespace HandoffDapr.Core.Tests;

/// <summary>Reading a verified Cursor webhook body (<see cref="CursorWebhook"/>).</summary>
public sealed class CursorWebhookTests
{
    [Theory]
    [InlineData("StatusChange")]
    [InlineData("statuschange")]
    [InlineData("agentCreated")]
    public void An_event_of_another_name_is_another_event_even_in_another_letter_case(string name)
    {
        // Not read as a status report: its id and status mean whatever that event means.
        var result = CursorWebhook.TryParse(Encoding.UTF8.GetBytes($$"""{"event":"{{name}}","id":"bc-1","status":"FINISHED"}"""), out var change);

        Assert.Equal(CursorWebhook.ParseResult.OtherEvent, result);
        Assert.Null(change);
    }

    [Theory]
    [InlineData("""{"event":"agentCreated"}""")]
    [InlineData("""{"event":"agentCreated","id":"../bc-1","status":7}""")]
    public void Another_events_body_is_another_event_whatever_its_id_and_status(string body)
    {
        // Another event is answered 204 (Cursor is not to send it again), never 400 for missing what a status report needs.
        Assert.Equal(CursorWebhook.ParseResult.OtherEvent, CursorWebhook.TryParse(Encoding.UTF8.GetBytes(body), out var change));
        Assert.Null(change);
    }

    [Theory]
    [InlineData("""{"event":"statusChange","status":"FINISHED"}""")]
    [InlineData("""{"event":"statusChange","id":"bc-1"}""")]
    [InlineData("""{"event":"statusChange","id":"bc-1","status":7}""")]
    [InlineData("""{"event":"statusChange","id":"","status":"FINISHED"}""")]
    [InlineData("""{"event":"statusChange","id":"../bc-1","status":"FINISHED"}""")]
    [InlineData("""{"event":"statusChange","id":"bc 1","status":"FINISHED"}""")]
    [InlineData("""{"id":"bc/1","status":"FINISHED"}""")]
    public void A_status_change_without_a_status_or_an_agent_id_a_provider_could_give_is_invalid(string body)
    {
        // An id no provider gives (a path, a space) would be looked up, logged and stored as the agent's.
        Assert.Equal(CursorWebhook.ParseResult.Invalid, CursorWebhook.TryParse(Encoding.UTF8.GetBytes(body), out var change));
        Assert.Null(change);
    }

    [Fact]
    public void A_status_change_with_an_agent_id_of_the_longest_length_is_read_and_one_longer_is_invalid()
    {
        var longest = new string('a', AgentIds.MaxLength);

        Assert.Equal(CursorWebhook.ParseResult.StatusChange, CursorWebhook.TryParse(StatusChangeOf(longest), out _));
        Assert.Equal(CursorWebhook.ParseResult.Invalid, CursorWebhook.TryParse(StatusChangeOf(longest + "a"), out _));
    }

    [Fact]
    public void A_body_naming_no_event_is_read_as_a_status_change()
    {
        var result = CursorWebhook.TryParse(Encoding.UTF8.GetBytes("""{"id":"bc-1","status":"FINISHED"}"""), out var change);

        Assert.Equal(CursorWebhook.ParseResult.StatusChange, result);
        Assert.Equal(("bc-1", ProviderAgentStatus.Finished), (change!.Agent.Id, change.Agent.Status));
    }

    [Fact]
    public void A_status_change_carries_its_agents_page_pull_request_and_summary()
    {
        // The agent's page and its pull request are both URLs under target: read one for the other, the run would link
        // the pull request to the agent's page.
        var body = """{"event":"statusChange","id":"bc-1","status":"FINISHED","summary":"Bounded the pool","target":{"url":"https://cursor.com/agents?id=bc-1","prUrl":"https://github.com/acme/shop/pull/8"}}""";

        Assert.Equal(CursorWebhook.ParseResult.StatusChange, CursorWebhook.TryParse(Encoding.UTF8.GetBytes(body), out var change));
        Assert.Equal(
            ("https://cursor.com/agents?id=bc-1", "https://github.com/acme/shop/pull/8", "Bounded the pool"),
            (change!.Agent.AgentUrl, change.Agent.PrUrl, change.Agent.Summary));
    }

    [Theory]
    [InlineData("https://github.com/acme/shop", "acme/shop")]
    [InlineData("https://gitlab.com/acme/shop", null)]
    public void A_status_change_carries_its_sources_github_repository_as_owner_and_name(string source, string? expected)
    {
        // The host hands the report's repository on as owner/name: with it the run adopts the agent of a launch whose
        // answer was lost (same branch and repository); without it such an agent would run unseen.
        var body = $$$"""{"event":"statusChange","id":"bc-1","status":"RUNNING","source":{"repository":"{{{source}}}"},"target":{"branchName":"fix-pool"}}""";

        Assert.Equal(CursorWebhook.ParseResult.StatusChange, CursorWebhook.TryParse(Encoding.UTF8.GetBytes(body), out var change));
        Assert.Equal(expected, change!.Repository?.FullName);
        Assert.Equal(source, change.RawRepository);
        Assert.Equal(expected ?? source, change.Agent.Repository);
        Assert.Equal("fix-pool", change.Agent.BranchName);
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("\"statusChange\"")]
    [InlineData("""{"event":"statusChange","id":"bc-1","status":"FINISHED"} {}""")]
    [InlineData("""{"event":"statusChange","id":"bc-1","status":"FINISHED","id":"bc-2"}""")]
    [InlineData("""{"event":"statusChange","id":"bc-1","status":"FINISHED","Status":"ERROR"}""")]
    [InlineData("""{"event":"statusChange","id":"bc-1","status":"FINISHED","target":{"prUrl":"a","PRURL":"b"}}""")]
    public void A_body_that_is_not_one_object_naming_each_property_once_is_invalid(string body) =>
        Assert.Equal(CursorWebhook.ParseResult.Invalid, CursorWebhook.TryParse(Encoding.UTF8.GetBytes(body), out _));

    [Fact]
    public void A_property_name_that_is_not_valid_utf16_makes_the_body_invalid_not_an_exception()
    {
        // The parser's check for a name given twice meets it (and throws InvalidOperationException, not JsonException):
        // read past, the rest of the body would be applied as a report.
        var body = Encoding.UTF8.GetBytes("""{"\ud800":1,"event":"statusChange","id":"bc-1","status":"FINISHED"}""");

        Assert.Equal(CursorWebhook.ParseResult.Invalid, CursorWebhook.TryParse(body, out var change));
        Assert.Null(change);
    }

    [Fact]
    public void A_body_nested_up_to_32_levels_is_read_and_one_level_deeper_is_invalid()
    {
        // As the API's other bodies (HandoffJsonContext's MaxDepth): the webhook is anyone's until its signature is
        // checked, and once signed still the provider's text.
        static byte[] Nested(int depth) => Encoding.UTF8.GetBytes(
            """{"event":"statusChange","id":"bc-1","status":"FINISHED","extra":""" + new string('[', depth - 1) + new string(']', depth - 1) + "}");

        Assert.Equal(CursorWebhook.ParseResult.StatusChange, CursorWebhook.TryParse(Nested(32), out _));
        Assert.Equal(CursorWebhook.ParseResult.Invalid, CursorWebhook.TryParse(Nested(33), out _));
    }

    [Theory]
    [InlineData(" https://github.com/acme/shop\n", "acme/shop")]
    [InlineData("https://GitHub.com/acme/shop", "acme/shop")]
    [InlineData("HTTPS://WWW.GITHUB.COM/Acme/Shop.git", "Acme/Shop")]
    [InlineData("http://github.com/acme/shop", "acme/shop")]
    public void A_github_repository_is_read_however_its_url_is_written(string source, string expected)
    {
        // Read as not GitHub's, the report of our own agent would be logged and counted as one of another repository
        // and never applied.
        Assert.Equal(expected, CursorWebhook.ParseGitHubRepository(source)?.FullName);
        Assert.Equal(expected, CursorWebhook.RepositoryNamed(source));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("  \t")]
    public void A_source_of_nothing_visible_names_no_repository(string? source) =>
        Assert.Null(CursorWebhook.RepositoryNamed(source));

    [Theory]
    [InlineData("github.com/acme/shop")]
    [InlineData("https://www.github.com/acme/shop/")]
    [InlineData("https://github.com/acme/shop.git/")]
    public void A_github_repository_is_read_without_a_scheme_and_with_a_closing_slash(string source) =>
        Assert.Equal("acme/shop", CursorWebhook.ParseGitHubRepository(source)?.FullName);

    [Theory]
    [InlineData("https://mygithub.com/acme/shop")]
    [InlineData("https://evil.example/github.com/acme/shop")]
    [InlineData("https://github.com.evil.example/acme/shop")]
    [InlineData("https://gist.github.com/acme/shop")]
    [InlineData("ftp://github.com/acme/shop")]
    [InlineData("git@github.com:acme/shop.git")]
    [InlineData("https://github.com/acme/shop/tree/main")]
    [InlineData("https://github.com/acme")]
    public void A_source_naming_no_github_repository_is_named_as_written_never_as_owner_and_name(string source)
    {
        // Taken for owner/name, another host's acme/shop would pass for the launch's repository.
        Assert.Null(CursorWebhook.ParseGitHubRepository(source));
        Assert.Equal(source, CursorWebhook.RepositoryNamed(source));
    }

    [Fact]
    public void A_source_naming_no_github_repository_is_named_printable_and_bounded()
    {
        // It goes into log lines (AgentReportOfAnotherRepository): anyone's text, made safe to print.
        var named = CursorWebhook.RepositoryNamed("gitlab.com/acme/\u202eshop\n" + new string('x', 500));

        Assert.NotNull(named);
        Assert.True(named.Length <= 101, named);
        Assert.DoesNotContain(named, c => char.IsControl(c) || char.GetUnicodeCategory(c) == System.Globalization.UnicodeCategory.Format);
        Assert.StartsWith("gitlab.com/acme/", named, StringComparison.Ordinal);
    }

    private static byte[] StatusChangeOf(string id) => Encoding.UTF8.GetBytes($$"""{"event":"statusChange","id":"{{id}}","status":"FINISHED"}""");
}
