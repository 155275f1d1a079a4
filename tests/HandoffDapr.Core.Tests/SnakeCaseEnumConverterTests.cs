using System.Text.Json;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Tests;

public sealed class SnakeCaseEnumConverterTests
{
    [Theory]
    [InlineData("1")]
    [InlineData("\"1\"")]
    public void Enum_sent_as_a_number_is_refused(string json)
    {
        var options = new JsonSerializerOptions { Converters = { new SnakeCaseEnumConverter<CodingAgentStatus>() } };

        Assert.Throws<JsonException>(() => JsonSerializer.Deserialize<CodingAgentStatus>(json, options));
    }
}
