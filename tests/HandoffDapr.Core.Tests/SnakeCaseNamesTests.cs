using System.Text.Json;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Tests;

public sealed class SnakeCaseNamesTests
{
    [Fact]
    public void Every_provider_status_is_named_as_the_wire_converter_writes_it() => AssertNamedAsOnTheWire<ProviderAgentStatus>();

    [Fact]
    public void Every_report_outcome_is_named_as_the_wire_converter_writes_it() => AssertNamedAsOnTheWire<AgentReportStatus>();

    [Fact]
    public void An_undeclared_value_is_named_by_its_number()
    {
        Assert.Equal("42", SnakeCaseNames<ProviderAgentStatus>.Of((ProviderAgentStatus)42));
    }

    private static void AssertNamedAsOnTheWire<TEnum>()
        where TEnum : struct, Enum
    {
        var options = new JsonSerializerOptions { Converters = { new SnakeCaseEnumConverter<TEnum>() } };
        foreach (var value in Enum.GetValues<TEnum>())
        {
            var written = JsonSerializer.Deserialize<string>(JsonSerializer.Serialize(value, options));
            Assert.Equal(written, SnakeCaseNames<TEnum>.Of(value));
        }
    }

    [Fact]
    public void An_enum_with_two_names_for_one_value_is_named_as_the_wire_converter_writes_it() => AssertNamedAsOnTheWire<Aliased>();

    // Enum.GetValues lists an aliased value once per name.
    public enum Aliased
    {
        First = 1,
        Alias = 1,
        Second = 2,
    }
}
