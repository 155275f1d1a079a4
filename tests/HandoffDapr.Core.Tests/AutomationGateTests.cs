using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;

namespace HandoffDapr.Core.Tests;

public sealed class AutomationGateTests
{
    private static readonly RunSnapshot RootCauseDone = new(
        1,
        Metadata: new RunMetadata("open_pr", 1),
        Artifacts: new RunArtifacts(new RootCauseArtifact("Pool exhausted")),
        Preferences: new HandoffPreferences([], new AutomationHandoff("root_cause", "cursor_background_agent", 42, false)));

    [Theory]
    [InlineData("solution")]
    [InlineData("code_changes")]
    [InlineData("open_pr")]
    public void Root_cause_done_with_the_run_meant_to_go_further_launches(string stoppingPoint)
    {
        Assert.Equal(GateVerdict.Launch, AutomationGate.Evaluate(RootCauseDone with { Metadata = new RunMetadata(stoppingPoint) }));
    }

    [Fact]
    public void No_automation_preference_means_no_launch() =>
        Assert.Equal(GateVerdict.NoAutomationPreference, AutomationGate.Evaluate(RootCauseDone with { Preferences = new HandoffPreferences() }));

    [Fact]
    public void Completed_solution_step_is_not_the_root_cause_step() =>
        Assert.Equal(GateVerdict.NotAtRootCause, AutomationGate.Evaluate(RootCauseDone with
        {
            Artifacts = new RunArtifacts(new RootCauseArtifact("x"), new SolutionArtifact("Bound the pool")),
        }));

    [Fact]
    public void No_completed_step_is_not_the_root_cause_step() =>
        Assert.Equal(GateVerdict.NotAtRootCause, AutomationGate.Evaluate(RootCauseDone with { Artifacts = new RunArtifacts(new RootCauseArtifact(" ", [null])) }));

    [Fact]
    public void Root_cause_with_only_reproduction_steps_is_the_completed_root_cause_step() =>
        Assert.Equal(GateVerdict.Launch, AutomationGate.Evaluate(RootCauseDone with
        {
            Artifacts = new RunArtifacts(new RootCauseArtifact(" ", [null, " "], ["Open /checkout with 50 users"])),
        }));

    [Fact]
    public void Solution_whose_steps_are_all_null_has_not_completed_the_solution_step() =>
        Assert.Equal(GateVerdict.Launch, AutomationGate.Evaluate(RootCauseDone with
        {
            Artifacts = new RunArtifacts(new RootCauseArtifact("Pool exhausted"), new SolutionArtifact(" ", [null, null])),
        }));

    [Theory]
    [InlineData("root_cause")]
    [InlineData(null)]
    [InlineData("somewhere")]
    public void Stopping_point_not_past_the_root_cause_means_no_launch(string? stoppingPoint) =>
        Assert.Equal(GateVerdict.StoppingPointNotPastRootCause, AutomationGate.Evaluate(RootCauseDone with { Metadata = new RunMetadata(stoppingPoint) }));

    [Fact]
    public void Other_handoff_point_and_missing_integration_mean_no_launch()
    {
        Assert.Equal(GateVerdict.HandoffPointNotSupported, AutomationGate.Evaluate(RootCauseDone with
        {
            Preferences = new HandoffPreferences([], new AutomationHandoff("solution", null, 42)),
        }));
        Assert.Equal(GateVerdict.NoIntegration, AutomationGate.Evaluate(RootCauseDone with
        {
            Preferences = new HandoffPreferences([], new AutomationHandoff("root_cause", null, null)),
        }));
    }

    [Theory]
    [InlineData("ROOT_CAUSE")]
    [InlineData("Root_Cause")]
    [InlineData(null)]
    public void Handoff_point_in_another_letter_case_or_unset_is_the_root_cause(string? handoffPoint) =>
        Assert.Equal(GateVerdict.Launch, AutomationGate.Evaluate(RootCauseDone with
        {
            Preferences = new HandoffPreferences([], new AutomationHandoff(handoffPoint, "cursor_background_agent", 42)),
        }));

    [Theory]
    [InlineData("OPEN_PR")]
    [InlineData("Solution")]
    [InlineData("Code_Changes")]
    public void Stopping_point_past_the_root_cause_in_another_letter_case_launches(string stoppingPoint) =>
        Assert.Equal(GateVerdict.Launch, AutomationGate.Evaluate(RootCauseDone with { Metadata = new RunMetadata(stoppingPoint) }));

    [Fact]
    public void Solution_with_no_steps_and_a_blank_summary_has_not_completed_the_solution_step() =>
        Assert.Equal(GateVerdict.Launch, AutomationGate.Evaluate(RootCauseDone with
        {
            Artifacts = new RunArtifacts(new RootCauseArtifact("Pool exhausted"), new SolutionArtifact(" ", [])),
        }));

    /// <summary>
    /// The runbook: CompletionEventStored gives the reason a completion event launched nothing in the event's own field
    /// names, for the operator to look up in the event.
    /// </summary>
    [Theory]
    [InlineData(GateVerdict.NoAutomationPreference, "no preferences.automation_handoff")]
    [InlineData(GateVerdict.HandoffPointNotSupported, "automation_handoff.handoff_point is not root_cause")]
    [InlineData(GateVerdict.NotAtRootCause, "the step completed is not the root cause (no root cause yet, or the solution)")]
    [InlineData(GateVerdict.StoppingPointNotPastRootCause, "metadata.stopping_point is not past root_cause")]
    [InlineData(GateVerdict.NoIntegration, "automation_handoff names no integration_id")]
    public void Each_verdict_that_launches_nothing_is_described_in_the_events_own_field_names(GateVerdict verdict, string reason) =>
        Assert.Equal(reason, AutomationGate.Describe(verdict));

    [Fact]
    public void Solution_with_only_steps_is_the_completed_solution_step_not_the_root_cause() =>
        Assert.Equal(GateVerdict.NotAtRootCause, AutomationGate.Evaluate(RootCauseDone with
        {
            Artifacts = new RunArtifacts(new RootCauseArtifact("Pool exhausted"), new SolutionArtifact(" ", [null, new SolutionStep("Bound the pool")])),
        }));

    [Fact]
    public void Root_cause_with_only_five_whys_is_the_completed_root_cause_step() =>
        Assert.Equal(GateVerdict.Launch, AutomationGate.Evaluate(RootCauseDone with
        {
            Artifacts = new RunArtifacts(new RootCauseArtifact(" ", [null, " ", "The pool has ten connections"], [" "])),
        }));
}
