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
}
