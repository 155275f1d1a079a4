using System.Text.Json;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Tests;

public sealed class HandoffJsonContextTests
{
    [Fact]
    public void Snapshot_property_names_are_read_in_any_letter_case()
    {
        var snapshot = JsonSerializer.Deserialize("""{"RUN_ID":5,"Group":{"Id":6}}""", HandoffJsonContext.Default.RunSnapshot);

        Assert.Equal(5, snapshot!.RunId);
        Assert.Equal(6, snapshot.GroupId);
    }

    [Theory]
    [InlineData("""{"run_id":"5"}""")]
    [InlineData("""{"run_id":5,"group":{"id":"6"}}""")]
    public void Number_written_as_a_string_is_refused(string json) =>
        Assert.Throws<JsonException>(() => JsonSerializer.Deserialize(json, HandoffJsonContext.Default.RunSnapshot));

    [Theory]
    [InlineData("""{"run_id":1,"run_id":2}""")]
    [InlineData("""{"run_id":1,"RUN_ID":2}""")]
    [InlineData("""{"run_id":1,"group":{"id":2,"Id":3}}""")]
    public void Inbound_snapshot_naming_a_property_twice_in_any_case_is_refused(string json) =>
        Assert.Throws<JsonException>(() => JsonSerializer.Deserialize(json, InboundJson.RunSnapshot));

    [Fact]
    public void Options_for_other_serializers_write_snake_case()
    {
        var options = HandoffJsonContext.CreateOptions();

        var snapshot = JsonSerializer.SerializeToElement(new RunSnapshot(1, OrganizationId: 2), options);
        Assert.Equal(2, snapshot.GetProperty("organization_id").GetInt64());

        // A type outside the context, as the Dapr SDK's envelopes are.
        Assert.Equal("""{"envelope_id":3}""", JsonSerializer.Serialize(new Envelope(3), options));
    }

    public sealed record Envelope(long EnvelopeId);

    [Fact]
    public void Json_nested_deeper_than_32_levels_is_refused()
    {
        JsonSerializer.Deserialize(new string('[', 32) + new string(']', 32), HandoffJsonContext.Default.JsonElement);

        Assert.Throws<JsonException>(() => JsonSerializer.Deserialize(new string('[', 33) + new string(']', 33), HandoffJsonContext.Default.JsonElement));
    }
}
