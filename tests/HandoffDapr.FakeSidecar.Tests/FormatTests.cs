using System.Text;
using System.Text.Json;

namespace HandoffDapr.FakeSidecar.Tests;

public sealed class FormatTests
{
    [Theory]
    [InlineData("0h0m5s0ms", 5_000)]
    [InlineData("1h0m0s0ms", 3_600_000)]
    [InlineData("1.5s", 1_500)]
    [InlineData("300ms", 300)]
    [InlineData("PT5S", 5_000)]
    [InlineData("PT1H30M", 5_400_000)]
    public void Dapr_durations_parse_like_dapr_kit(string text, int ms)
    {
        Assert.True(DaprDurationParser.TryParseDuration(text, out var d));
        Assert.Equal(TimeSpan.FromMilliseconds(ms), d.Exact);
    }

    [Fact]
    public void Iso_repetitions_and_calendar_parts_are_kept()
    {
        Assert.True(DaprDurationParser.TryParseDuration("R3/PT10S", out var r));
        Assert.Equal((3, TimeSpan.FromSeconds(10)), (r.Repetitions, r.Exact));
        Assert.True(DaprDurationParser.TryParseDuration("P1D", out var day));
        Assert.True(day.HasCalendarPart);
        Assert.False(DaprDurationParser.TryParseDuration("5 seconds", out _));
    }

    [Theory]
    [InlineData(90_000, "1m30s")]
    [InlineData(3_600_000, "1h0m0s")]
    [InlineData(1_500, "1.5s")]
    [InlineData(250, "250ms")]
    public void Go_duration_strings_match_time_Duration_String(int ms, string expected) =>
        Assert.Equal(expected, DaprDurationParser.FormatGoDuration(TimeSpan.FromMilliseconds(ms)));

    [Theory]
    [InlineData("""{"b":1,"a":[true,null,"x<y"]}""", """{"a":[true,null,"x\u003cy"],"b":1}""")]
    [InlineData("12345678901234567890", "12345678901234567000")]
    [InlineData("1e21", "1e+21")]
    [InlineData("0.0000001", "1e-7")]
    [InlineData("1.5", "1.5")]
    [InlineData("100", "100")]
    public void Values_are_stored_as_go_marshals_them(string json, string expected) =>
        Assert.Equal(expected, Encoding.UTF8.GetString(GoJson.Reencode(JsonDocument.Parse(json).RootElement, preserveNumbers: false)));

    [Theory]
    [InlineData("", DeliveryOutcome.Success)]
    [InlineData("not json", DeliveryOutcome.Success)]
    [InlineData("[1]", DeliveryOutcome.Success)]
    [InlineData("""{"status":"SUCCESS"}""", DeliveryOutcome.Success)]
    [InlineData("""{"Status":"DROP"}""", DeliveryOutcome.Drop)]
    [InlineData("""{"status":"RETRY"} trailing""", DeliveryOutcome.Retry)]
    [InlineData("""{"status":"drop"}""", DeliveryOutcome.Retry)]
    public async Task App_replies_read_like_daprd(string body, DeliveryOutcome expected)
    {
        using var response = new HttpResponseMessage(System.Net.HttpStatusCode.OK) { Content = new StringContent(body) };
        Assert.Equal(expected, await PubSubDelivery.ReadOutcomeAsync(response, CancellationToken.None));
    }

    [Fact]
    public void Routing_rules_match_simple_cel()
    {
        var ce = JsonDocument.Parse("""{"type":"run.completed","data":{"stage":"root_cause","n":2}}""").RootElement;
        Assert.True(RouteMatcher.Matches("""event.type == "run.completed" && event.data.n == 2""", ce));
        Assert.False(RouteMatcher.Matches("""event.data.stage != "root_cause" || event.type == 'x'""", ce));
        Assert.Throws<NotSupportedException>(() => RouteMatcher.Matches("event.type.startsWith('run')", ce));
    }
}
