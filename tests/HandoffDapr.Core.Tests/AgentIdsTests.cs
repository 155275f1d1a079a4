using HandoffDapr.Core.Providers;

namespace HandoffDapr.Core.Tests;

/// <summary>The one shape of agent id that goes into a provider's request path.</summary>
public sealed class AgentIdsTests
{
    [Theory]
    [InlineData("bc-1")]
    [InlineData("bc_abc123")]
    [InlineData("task.42")]
    [InlineData("A-z_0.9")]
    public void Ids_of_ascii_letters_digits_dashes_underscores_and_dots_are_valid(string agentId) => Assert.True(AgentIds.IsValid(agentId));

    /// <summary>"." and ".." are dot segments: in v0/agents/{id}/stop they would name another path once normalised.</summary>
    [Theory]
    [InlineData(".")]
    [InlineData("..")]
    [InlineData("bç-1")]
    [InlineData("bc-١")]
    [InlineData("bc 1")]
    [InlineData("bc/1")]
    [InlineData("bc%2F1")]
    public void Dot_segments_and_ids_with_any_other_character_are_invalid(string agentId) => Assert.False(AgentIds.IsValid(agentId));

    [Fact]
    public void Ids_are_valid_up_to_the_longest_length()
    {
        Assert.True(AgentIds.IsValid(new string('a', AgentIds.MaxLength)));
        Assert.False(AgentIds.IsValid(new string('a', AgentIds.MaxLength + 1)));
    }
}
