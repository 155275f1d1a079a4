using System.Text;
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
}
