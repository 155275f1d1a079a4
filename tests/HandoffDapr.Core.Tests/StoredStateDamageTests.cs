using System.Text.Json;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Tests;

/// <summary>A state read back from a store is used only when it can be the run's: what the hosts refuse instead of starting the run over.</summary>
public sealed class StoredStateDamageTests
{
    [Theory]
    [InlineData("""{"run_id": 7, "coding_agents": {}, "launches": [], "timeline": []}""", false)]
    [InlineData("""{"run_id": 7, "snapshot": {"run_id": 7}, "coding_agents": {}, "launches": [], "timeline": []}""", false)]
    [InlineData("""{"run_id": 8, "coding_agents": {}, "launches": [], "timeline": []}""", true)]
    [InlineData("""{}""", true)]
    [InlineData("""{"run_id": 7}""", true)]
    [InlineData("""{"run_id": 7, "snapshot": {"run_id": 8}, "coding_agents": {}, "launches": [], "timeline": []}""", true)]
    [InlineData("""{"run_id": 7, "coding_agents": {}, "launches": [{"repository": "acme/shop", "branch_name": "b"}], "timeline": []}""", true)]
    [InlineData("""{"run_id": 7, "snapshot": {"run_id": 7}, "coding_agents": {"a": {"status": "running", "results": []}}, "launches": [], "timeline": []}""", true)]
    [InlineData("""{"run_id": 7, "snapshot": {"run_id": 7}, "coding_agents": {"a": null}, "launches": [], "timeline": []}""", true)]
    [InlineData("""{"run_id": 7, "snapshot": {"run_id": 7}, "coding_agents": {"a": {"id": "a", "status": "running", "results": []}}, "launches": [], "timeline": []}""", true)]
    [InlineData("""{"run_id": 7, "snapshot": {"run_id": 7}, "coding_agents": {}, "launches": [{"repository": "acme/shop", "branch_name": "b", "agent_id": "a"}], "timeline": []}""", true)]
    [InlineData("""{"run_id": 7, "snapshot": {"run_id": 7}, "coding_agents": {"a": {"id": "a", "status": "running", "results": []}}, "launches": [{"repository": "acme/shop", "branch_name": "b", "agent_id": "a"}], "timeline": []}""", false)]
    [InlineData("""{"run_id": 7, "snapshot": {"run_id": 7}, "coding_agents": {}, "launches": [null], "timeline": []}""", true)]
    [InlineData("""{"run_id": 7, "snapshot": {"run_id": 7}, "coding_agents": {}, "launches": [], "timeline": [null]}""", true)]
    // One part alone missing: read as empty, it would start the run over (a lost timeline is as much a lost part).
    [InlineData("""{"run_id": 7, "coding_agents": null, "launches": [], "timeline": []}""", true)]
    [InlineData("""{"run_id": 7, "coding_agents": {}, "launches": null, "timeline": []}""", true)]
    [InlineData("""{"run_id": 7, "coding_agents": {}, "launches": []}""", true)]
    // An agent its launch owns, but without its results, or stored under another agent's id.
    [InlineData("""{"run_id": 7, "snapshot": {"run_id": 7}, "coding_agents": {"a": {"id": "a", "status": "running"}}, "launches": [{"repository": "acme/shop", "branch_name": "b", "agent_id": "a"}], "timeline": []}""", true)]
    [InlineData("""{"run_id": 7, "snapshot": {"run_id": 7}, "coding_agents": {"a": {"id": "b", "status": "running", "results": []}}, "launches": [{"repository": "acme/shop", "branch_name": "b", "agent_id": "a"}], "timeline": []}""", true)]
    public void State_that_cannot_be_the_runs_is_named_damaged(string json, bool damaged)
    {
        var state = JsonSerializer.Deserialize(json, HandoffJsonContext.Default.RunHandoffState)!;

        Assert.Equal(damaged, state.FindDamage(7) is not null);
    }

    [Fact]
    public void State_the_engine_saved_is_never_named_damaged()
    {
        var saved = RunHandoffState.New(7);
        var stored = JsonSerializer.Deserialize(JsonSerializer.SerializeToUtf8Bytes(saved, HandoffJsonContext.Default.RunHandoffState), HandoffJsonContext.Default.RunHandoffState)!;

        Assert.Null(stored.FindDamage(7));
    }
}
