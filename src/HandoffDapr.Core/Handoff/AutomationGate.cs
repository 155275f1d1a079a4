using HandoffDapr.Core.Model;

namespace HandoffDapr.Core.Handoff;

public enum GateVerdict
{
    Launch,
    NoAutomationPreference,
    NotAtRootCause,
    StoppingPointNotPastRootCause,
    HandoffPointNotSupported,
    NoIntegration,
}

/// <summary>
/// Whether a completed run is handed off automatically — the reference's gate: the project prefers an
/// automatic handoff, the step just completed is the root cause, and the run was meant to go further.
/// </summary>
public static class AutomationGate
{
    public const string RootCauseStep = "root_cause";
    public const string SolutionStep = "solution";

    // Seer's stopping points after the root cause, in order.
    private static readonly HashSet<string> PastRootCause = new(StringComparer.OrdinalIgnoreCase) { "solution", "code_changes", "open_pr" };

    public static GateVerdict Evaluate(RunSnapshot snapshot)
    {
        var handoff = snapshot.Preferences?.AutomationHandoff;
        if (handoff is null)
        {
            return GateVerdict.NoAutomationPreference;
        }

        if (handoff.HandoffPoint is { } point && !string.Equals(point, RootCauseStep, StringComparison.OrdinalIgnoreCase))
        {
            return GateVerdict.HandoffPointNotSupported;
        }

        if (CompletedStep(snapshot.Artifacts) != RootCauseStep)
        {
            return GateVerdict.NotAtRootCause;
        }

        if (snapshot.Metadata?.StoppingPoint is not { } stoppingPoint || !PastRootCause.Contains(stoppingPoint))
        {
            return GateVerdict.StoppingPointNotPastRootCause;
        }

        return handoff.IntegrationId is null ? GateVerdict.NoIntegration : GateVerdict.Launch;
    }

    /// <summary>
    /// Why a verdict hands nothing off, in the event's own field names, for the operator reading the log (the event is
    /// answered as taken either way).
    /// </summary>
    public static string Describe(GateVerdict verdict) => verdict switch
    {
        GateVerdict.NoAutomationPreference => "no preferences.automation_handoff",
        GateVerdict.HandoffPointNotSupported => "automation_handoff.handoff_point is not root_cause",
        GateVerdict.NotAtRootCause => "the step completed is not the root cause (no root cause yet, or the solution)",
        GateVerdict.StoppingPointNotPastRootCause => "metadata.stopping_point is not past root_cause",
        GateVerdict.NoIntegration => "automation_handoff names no integration_id",
        _ => "the gate passes",
    };

    /// <summary>As the reference reads it: a solution with data means the solution step, else a root cause with data.</summary>
    public static string? CompletedStep(RunArtifacts? artifacts)
    {
        var solution = artifacts?.Solution;
        if (solution is not null && (HasText(solution.OneLineSummary) || solution.Steps?.Any(step => step is not null) == true))
        {
            return SolutionStep;
        }

        var rootCause = artifacts?.RootCause;
        if (rootCause is not null && (HasText(rootCause.OneLineDescription)
            || rootCause.FiveWhys?.Any(HasText) == true
            || rootCause.ReproductionSteps?.Any(HasText) == true))
        {
            return RootCauseStep;
        }

        return null;
    }

    /// <summary>Whether a snapshot has completed an earlier step than another of the same run (root cause against solution).</summary>
    public static bool IsEarlierStep(RunSnapshot snapshot, RunSnapshot other) =>
        StepOrder(CompletedStep(snapshot.Artifacts)) < StepOrder(CompletedStep(other.Artifacts));

    private static int StepOrder(string? step) => step switch
    {
        SolutionStep => 2,
        RootCauseStep => 1,
        _ => 0,
    };

    private static bool HasText(string? text) => !string.IsNullOrWhiteSpace(text);
}
