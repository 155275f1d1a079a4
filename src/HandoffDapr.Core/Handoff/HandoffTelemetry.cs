using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace HandoffDapr.Core.Handoff;

/// <summary>
/// Traces and metrics of the handoff, on BCL types only (the host wires OpenTelemetry to these names).
/// Attributes carry ids, repository and integration; never prompts or secrets.
/// </summary>
public static class HandoffTelemetry
{
    public const string Name = "HandoffDapr";

    public static readonly ActivitySource ActivitySource = new(Name);

    private static readonly Meter Meter = new(Name);

    public static readonly Counter<long> Launches = Meter.CreateCounter<long>(
        "handoff.launches", unit: "{launch}", description: "Launch attempts by outcome (launched, reconciled, retry_scheduled, failed) and failure type.");

    public static readonly Counter<long> RetriesScheduled = Meter.CreateCounter<long>(
        "handoff.retries.scheduled", unit: "{retry}", description: "Launch retries scheduled, by failure type.");

    public static readonly Counter<long> WebhookEvents = Meter.CreateCounter<long>(
        "handoff.webhook.events", unit: "{event}", description: "Provider webhooks received, by provider status and outcome.");

    public static readonly Counter<long> AgentStatusChanges = Meter.CreateCounter<long>(
        "handoff.agents.status_changes", unit: "{change}", description: "Agents entering a status (pending, running, completed, failed).");

    /// <summary>
    /// Buckets for seconds, from a fast answer to the in-flight budget (90 % of 2 min), with bounds either side of the
    /// default 30 s call timeout: without them OpenTelemetry's defaults, made for milliseconds (0, 5, 10, 25, …), put
    /// nearly every launch in the first bucket.
    /// </summary>
    public static readonly Histogram<double> LaunchDuration = Meter.CreateHistogram(
        "handoff.launch.duration", unit: "s", description: "Time of one provider launch call (or reconciliation).", tags: null,
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 300] });

    public static readonly UpDownCounter<long> HandoffsInFlight = Meter.CreateUpDownCounter<long>(
        "handoff.in_flight", unit: "{handoff}", description: "Launch rounds whose provider calls are under way (not polls, stops or follow-ups).");

    /// <summary>
    /// One call of a run's actor (Dapr mode), from daprd's delivery to its answer, the wait for the run's turn included:
    /// its method (<c>TriggerAsync</c>, <c>ReceiveReminderAsync</c>, …) and run. A call that fails is marked an error by
    /// the exception's type, never its text.
    /// </summary>
    public static Activity? StartActorCall(long runId, string method)
    {
        var activity = ActivitySource.StartActivity("handoff.actor_call", ActivityKind.Internal);
        activity?.SetTag("handoff.run_id", runId);
        activity?.SetTag("handoff.actor_method", method);
        return activity;
    }

    /// <summary>
    /// One wake-up of a run by embedded mode's schedule, from its decision on: the provider calls of its due launches,
    /// reconciliations and status poll, and their recording. In the trace of the completion event whose launches it makes
    /// when there is one (<paramref name="eventTrace"/>), else a trace of its own.
    /// </summary>
    public static Activity? StartWake(long runId, ActivityContext eventTrace)
    {
        var activity = ActivitySource.StartActivity("handoff.wake", ActivityKind.Internal, eventTrace);
        activity?.SetTag("handoff.run_id", runId);
        return activity;
    }

    public static Activity? StartLaunchAttempt(long runId, string repository, long integrationId, int attempt)
    {
        var activity = ActivitySource.StartActivity("handoff.launch_attempt", ActivityKind.Internal);
        activity?.SetTag("handoff.run_id", runId);
        activity?.SetTag("handoff.repository", repository);
        activity?.SetTag("handoff.integration_id", integrationId);
        activity?.SetTag("handoff.attempt", attempt);
        return activity;
    }
}
