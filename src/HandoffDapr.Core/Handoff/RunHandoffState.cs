using System.Text.Json.Serialization;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Handoff;

/// <summary>
/// Everything the service keeps about one autofix run. Both hosts store exactly this record
/// (a SQLite row in embedded mode, actor state in Dapr mode); the engine is the only code that changes it.
/// </summary>
public sealed record RunHandoffState(
    long RunId,
    RunSnapshot? Snapshot,
    IReadOnlyDictionary<string, CodingAgentState> CodingAgents,
    IReadOnlyList<RepositoryLaunch> Launches,
    IReadOnlyList<TimelineEntry> Timeline)
{
    public const int MaxTimelineEntries = 200;

    public static RunHandoffState New(long runId) => new(runId, null, new Dictionary<string, CodingAgentState>(), [], []);

    public long? GroupId => Snapshot?.GroupId;

    /// <summary>
    /// Digests (<see cref="RunSnapshot.ContentDigest"/>) of the snapshots the run held before its current one, newest
    /// last, at most <see cref="MaxReplacedSnapshots"/>. Events carry no order: one bringing a snapshot the run already
    /// replaced is a late redelivery, and must not put that snapshot back.
    /// </summary>
    public IReadOnlyList<string>? ReplacedSnapshots { get; init; }

    public const int MaxReplacedSnapshots = 8;

    /// <summary>Whether the run held this snapshot before its current one.</summary>
    public bool Replaced(RunSnapshot snapshot) =>
        ReplacedSnapshots is { Count: > 0 } replaced && replaced.Contains(RunSnapshot.ContentDigest(snapshot));

    /// <summary>This state holding <paramref name="snapshot"/>, the one it held before remembered as replaced.</summary>
    public RunHandoffState WithSnapshot(RunSnapshot snapshot)
    {
        if (Snapshot is not { } held || RunSnapshot.SameContent(held, snapshot))
        {
            return this with { Snapshot = snapshot };
        }

        var digest = RunSnapshot.ContentDigest(held);
        return this with
        {
            Snapshot = snapshot,
            ReplacedSnapshots = [.. (ReplacedSnapshots ?? []).Where(known => known != digest).Append(digest).TakeLast(MaxReplacedSnapshots)],
        };
    }

    /// <summary>When the agents the status poll reads (<see cref="AgentsToPoll"/>) are read from the provider next (the fallback for lost webhooks).</summary>
    public PollSchedule? Poll { get; init; }

    public bool HasActiveAgents => CodingAgents.Values.Any(agent => !agent.Status.IsFinal());

    /// <summary>
    /// The agents the status poll reads: the unfinished ones, those given up on whose end the provider has not shown, ended
    /// ones awaiting a pull request after a follow-up, and ended ones a webhook then said finished without their pull request.
    /// </summary>
    public IEnumerable<CodingAgentState> AgentsToPoll => CodingAgents.Values.Where(agent => !agent.Status.IsFinal()
        || (Poll?.GivenUp?.Contains(agent.Id) ?? false) || (Poll?.AwaitingPullRequest?.Contains(agent.Id) ?? false)
        || (Poll?.FinishesToConfirm?.ContainsKey(agent.Id) ?? false));

    /// <summary>
    /// Agents are still read from the provider: some are unfinished, given up on without a confirmed end, awaiting a pull
    /// request after a follow-up, or ended with a finish to confirm.
    /// </summary>
    public bool HasAgentsToPoll => HasActiveAgents || Poll?.GivenUp is { Count: > 0 } || Poll?.AwaitingPullRequest is { Count: > 0 }
        || Poll?.FinishesToConfirm is { Count: > 0 };

    /// <summary>
    /// A launch round is at the provider: launches in flight whose deadline has not passed (past it, they are a crash's
    /// leftovers, to reconcile). Nothing else is launched for the run meanwhile.
    /// </summary>
    public bool HasRoundInFlight(DateTimeOffset now) => Launches.Any(launch => launch.Phase == LaunchPhase.InFlight && launch.NextAttemptAt > now);

    /// <summary>
    /// Nothing is pending: no launch due, in flight, to be retried or with an outcome to look for, and no agent still
    /// read from the provider (unfinished, given up on, awaiting a pull request, or with a finish to confirm). Such a
    /// run has no wake-up (<see cref="NextWakeAt"/> is null) and changes only when someone calls it; only such a run
    /// may be deleted by retention (<see cref="RunRetention"/>).
    /// </summary>
    [JsonIgnore]
    public bool IsSettled => !Launches.Any(launch => launch.IsAwaitingWork) && !HasAgentsToPoll;

    /// <summary>When the run's owner must wake up next (a retry, a reconciliation, a poll), or null when nothing is pending.</summary>
    public DateTimeOffset? NextWakeAt()
    {
        // While a round is in flight the other launches wait for it: the wake-up is at its deadline, moved to the launches
        // due by the save of its answers. The latest in-flight deadline is the live round's: an earlier one is a crash's
        // leftover, whose wake-up (a round being under way) would find nothing to do, and fire again, until the round ends.
        var launchDue = Launches.Where(launch => launch.Phase == LaunchPhase.InFlight).Max(launch => launch.NextAttemptAt)
            ?? Launches.Where(launch => launch.IsAwaitingWork).Min(launch => launch.NextAttemptAt);
        var pollDue = HasAgentsToPoll ? Poll?.NextPollAt : null;
        return (launchDue, pollDue) switch
        {
            ({ } launch, { } poll) => launch < poll ? launch : poll,
            ({ } launch, null) => launch,
            (null, var poll) => poll,
        };
    }

    /// <summary>
    /// Why this state, read from a store, cannot be run <paramref name="runId"/>'s (edited by hand, damaged, or another
    /// run's), or null when it can. A host refuses such a state rather than decide on it: a part read as empty would
    /// start the run over on top of its agents, a snapshot missing or of another run would skip its group check.
    /// </summary>
    public string? FindDamage(long runId)
    {
        // The stored JSON can leave any non-nullable member null (a property missing); the compiler's view is not the store's.
        IReadOnlyDictionary<string, CodingAgentState>? agents = CodingAgents;
        IReadOnlyList<RepositoryLaunch>? launches = Launches;
        IReadOnlyList<TimelineEntry>? timeline = Timeline;
        return RunId != runId ? "it names another run"
            : agents is null || launches is null || timeline is null ? "a part is missing or null"
            : Snapshot is { } snapshot && snapshot.RunId != runId ? "its snapshot is another run's"
            : Snapshot is null && (launches.Count > 0 || agents.Count > 0) ? "it has launches or agents but no snapshot"
            : agents.Any(entry => entry.Value?.Id != entry.Key || entry.Value.Results is null) ? "an agent is unreadable"
            : launches.Any(launch => launch?.Repository is null || launch.BranchName is null) ? "a launch is unreadable"
            : timeline.Any(entry => entry is null) ? "a timeline entry is unreadable"
            // The engine records an agent and its launch's agent id together: one without the other is a part lost (a
            // key evicted or deleted), and a trigger would launch the repository again on top of the agent.
            : agents.Keys.Any(id => !launches.Any(launch => launch.AgentId == id)) ? "an agent no launch owns"
            : launches.Any(launch => launch.AgentId is { } id && !agents.ContainsKey(id)) ? "a launch's agent is missing"
            : null;
    }

    public RepositoryLaunch? LaunchOfAgent(string agentId) => Launches.FirstOrDefault(launch => launch.AgentId == agentId);

    /// <summary>
    /// The repository's current launch from the integration: its latest generation. Earlier generations stay in
    /// <see cref="Launches"/> so that their agents can still be stopped and still report a pull request.
    /// </summary>
    public RepositoryLaunch? FindLaunch(string repository, long integrationId) =>
        Launches.LastOrDefault(launch => launch.IntegrationId == integrationId
            && string.Equals(launch.Repository, repository, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// The latest launch of the repository from the integration whose agent is not failed: pending, running, or
    /// completed, perhaps in an earlier generation whose agent finished after a relaunch was made. While one exists
    /// the repository is handed off, and nothing more is launched for it.
    /// </summary>
    public RepositoryLaunch? LaunchWithLiveAgent(string repository, long integrationId) =>
        Launches.LastOrDefault(launch => launch.IntegrationId == integrationId
            && string.Equals(launch.Repository, repository, StringComparison.OrdinalIgnoreCase)
            && launch.AgentId is { } agentId
            && CodingAgents.TryGetValue(agentId, out var agent)
            && agent.Status != CodingAgentStatus.Failed);

    /// <summary>
    /// Replaces the launch of the same repository, integration and generation, or appends a new generation. A launch
    /// launched or failed keeps no instruction: it is read only to build the prompt of a launch still to be sent, and a
    /// person's relaunch of a failed one takes the new trigger's. Kept, it was most of the state of a run relaunched often
    /// (4096 characters per generation, up to six bytes each as stored). The other launches lose theirs here too: a run
    /// stored by an earlier release, which kept them all, would otherwise keep them for good (and one stored near daprd's
    /// limit per save would stay there, or past it refuse every save, whatever was launched next).
    /// </summary>
    internal RunHandoffState WithLaunch(RepositoryLaunch updated)
    {
        updated = WithoutEndedInstruction(updated);
        var launches = Launches.Select(WithoutEndedInstruction).ToList();
        var index = launches.FindIndex(launch => launch.IntegrationId == updated.IntegrationId && launch.Generation == updated.Generation
            && string.Equals(launch.Repository, updated.Repository, StringComparison.OrdinalIgnoreCase));
        if (index >= 0)
        {
            launches[index] = updated;
        }
        else
        {
            launches.Add(updated);
        }

        return this with { Launches = launches };
    }

    private static RepositoryLaunch WithoutEndedInstruction(RepositoryLaunch launch) =>
        !launch.IsAwaitingWork && launch.Instruction is not null ? launch with { Instruction = null } : launch;

    internal RunHandoffState WithAgent(CodingAgentState agent)
    {
        var agents = new Dictionary<string, CodingAgentState>(CodingAgents) { [agent.Id] = agent };
        return this with { CodingAgents = agents };
    }

    /// <summary>
    /// The timeline with these entries appended: its latest <see cref="MaxTimelineEntries"/>, and of the older ones only
    /// each agent's latest <see cref="TimelineEvents.FollowupSent"/> and latest <see cref="TimelineEvents.FinishReported"/>.
    /// The engine decides by those (whether a webhook's finish came since the last follow-up), and a busy run's other
    /// entries would otherwise push a held finish out before its agent's time-out. They are two per agent at most (a
    /// thousand for the largest run, 50 repositories of 10 generations), far smaller than the agents' own records.
    /// </summary>
    internal RunHandoffState WithTimeline(IEnumerable<TimelineEntry> entries)
    {
        var timeline = Timeline.Concat(entries).ToList();
        return this with { Timeline = timeline.Count > MaxTimelineEntries ? Trimmed(timeline) : timeline };
    }

    private static List<TimelineEntry> Trimmed(List<TimelineEntry> timeline)
    {
        var latestStart = timeline.Count - MaxTimelineEntries;
        var seen = new HashSet<(string AgentId, string Event)>();
        for (var i = timeline.Count - 1; i >= latestStart; i--)
        {
            if (DecidedBy(timeline[i]) is { } kind)
            {
                seen.Add(kind);
            }
        }

        var olderKept = new List<TimelineEntry>();
        for (var i = latestStart - 1; i >= 0; i--)
        {
            if (DecidedBy(timeline[i]) is { } kind && seen.Add(kind))
            {
                olderKept.Add(timeline[i]);
            }
        }

        olderKept.Reverse();
        return [.. olderKept, .. timeline.Skip(latestStart)];
    }

    private static (string AgentId, string Event)? DecidedBy(TimelineEntry entry) =>
        entry is { AgentId: { } agentId, Event: TimelineEvents.FollowupSent or TimelineEvents.FinishReported } ? (agentId, entry.Event) : null;
}

/// <summary>One repository handed to one integration: the durable record of its launch attempts.</summary>
/// <param name="Generation">
/// Bumped when the repository is launched again after its agent failed, or by another integration; part of the branch
/// name. A launch that failed without an agent is tried again in its own generation, on its own branch.
/// </param>
/// <param name="NextAttemptAt">
/// When the owner must act: a retry, or reconciling an attempt whose outcome is unknown. On a failed launch whose last
/// attempt was refused with a Retry-After: when that is over, before which a person's relaunch is not sent.
/// </param>
/// <param name="FirstAttemptAt">
/// When the first attempt that may have created an agent not found since started: the generation's first, or the first
/// after attempts that were refused or ruled out by a lookup (absent in launches stored before it was kept). A lookup
/// for its agent need not look further back.
/// </param>
/// <param name="OutcomeUnknown">
/// Set when the launch fails: whether an attempt may have created an agent not found since (its answer lost, or the
/// lookup for it left unfinished). False when every attempt was refused or ruled out, so a manual relaunch sends at once
/// rather than look for an agent that cannot exist (in a busy repository such a lookup may never finish). Absent in
/// launches stored before it was kept: then an agent may exist, and a relaunch looks first.
/// </param>
public sealed record RepositoryLaunch(
    string Repository,
    string RepoProvider,
    long IntegrationId,
    string Provider,
    int Generation,
    string BranchName,
    string? BaseRef,
    bool AutoCreatePr,
    string? Instruction,
    LaunchPhase Phase,
    int Attempts,
    DateTimeOffset? AttemptStartedAt,
    DateTimeOffset? NextAttemptAt,
    string? AgentId,
    string? FailureType,
    DateTimeOffset UpdatedAt,
    DateTimeOffset? FirstAttemptAt = null,
    bool? OutcomeUnknown = null)
{
    [JsonIgnore]
    public bool IsAwaitingWork => Phase is LaunchPhase.InFlight or LaunchPhase.RetryScheduled or LaunchPhase.OutcomeUnknown;

    /// <summary>An earlier attempt may have created an agent we never heard of: look for it before launching again.</summary>
    [JsonIgnore]
    public bool NeedsReconciliation => Phase is LaunchPhase.InFlight or LaunchPhase.OutcomeUnknown;

    /// <summary>
    /// Of a failed launch: an agent of it may exist, as its failure says (also for a relaunch ended before any call, which
    /// keeps no attempt but the earlier attempts' agent). Only a launch stored before that was kept goes by its attempts.
    /// </summary>
    [JsonIgnore]
    public bool AgentMayExist => OutcomeUnknown ?? Attempts > 0;
}

[JsonConverter(typeof(SnakeCaseEnumConverter<LaunchPhase>))]
public enum LaunchPhase
{
    /// <summary>Intent persisted, provider call under way (or the process died during it).</summary>
    InFlight,

    /// <summary>
    /// The provider made the agent, or a lookup found it (<see cref="RepositoryLaunch.AgentId"/>); how the agent fares
    /// is its own status.
    /// </summary>
    Launched,

    /// <summary>
    /// No agent can be expected from its attempts (the provider refused or failed for now, or the launch is saved as
    /// due with no attempt yet): it is sent again at <see cref="RepositoryLaunch.NextAttemptAt"/>, without a lookup.
    /// </summary>
    RetryScheduled,

    /// <summary>
    /// An attempt may have made an agent (its answer was lost or unreadable, or a lookup for it was left unfinished):
    /// unlike <see cref="RetryScheduled"/>, at <see cref="RepositoryLaunch.NextAttemptAt"/> the provider's agents are
    /// looked through first and the launch's own is adopted (the one on its branch; for Copilot, which names branches
    /// itself, the task whose prompt ends with its handoff reference); it is launched again only if a finished lookup
    /// found none.
    /// </summary>
    OutcomeUnknown,

    /// <summary>
    /// Given up: a failure no retry fixes, or <c>MaxAttempts</c> spent (<c>retries_exhausted</c>); only a person's
    /// trigger launches it again.
    /// </summary>
    Failed,
}

/// <param name="QuietPolls">Polls in a row that saw no change: the interval doubles with each.</param>
/// <param name="GivenUp">
/// Agents we failed for age whose end the provider has not shown yet (its stop may not have taken, or it offers none):
/// still read, so a pull request one opens later is kept, until the provider shows it ended or it is twice the maximum age.
/// One given up on after a follow-up (a person's stop, a time-out) is read as one awaiting its pull request is: no read's
/// end ends its watch, which may be stale, from before that follow-up. One without a follow-up that a webhook then says
/// finished without its pull request moves to <paramref name="FinishesToConfirm"/>.
/// </param>
/// <param name="AwaitingPullRequest">
/// Agents sent a follow-up while not completed with a pull request (at work, completed without one, stopped, failed or
/// timed out): read until one completes with a pull request, or until twice the maximum age from its last follow-up
/// (see <paramref name="FollowedUpAt"/>; the agent may not have resumed yet when it is first read).
/// </param>
/// <param name="FollowedUpAt">
/// When the agents in <paramref name="AwaitingPullRequest"/> were last sent a follow-up: their watch counts from then, as
/// does the given-up watch of one stopped since. One awaiting without an entry (stored before it was kept) counts from its launch.
/// </param>
/// <param name="FinishesToConfirm">
/// Agents the run showed ended (failed, or completed without a pull request), no longer read or given up on without a
/// follow-up, that a webhook then said finished without the pull request they were asked for, with when it said so:
/// read until a read shows them finished or with a pull request, for twice the maximum age from then at most; never
/// stopped (the provider says they finished). A host of an earlier release drops the list on its next save: the agent
/// is then left completed without a pull request, as that release did.
/// </param>
public sealed record PollSchedule(
    DateTimeOffset NextPollAt,
    int QuietPolls,
    IReadOnlyList<string>? GivenUp = null,
    IReadOnlyList<string>? AwaitingPullRequest = null,
    IReadOnlyDictionary<string, DateTimeOffset>? FollowedUpAt = null,
    IReadOnlyDictionary<string, DateTimeOffset>? FinishesToConfirm = null);

public sealed record TimelineEntry(DateTimeOffset At, string Event, string? Repository = null, string? AgentId = null, string? Detail = null);

public static class TimelineEvents
{
    public const string LaunchScheduled = "launch_scheduled";
    public const string LaunchStarted = "launch_started";
    public const string Launched = "launched";
    public const string Reconciled = "reconciled";
    public const string RetryScheduled = "retry_scheduled";
    public const string LaunchFailed = "launch_failed";
    public const string StatusChanged = "status_changed";
    public const string Stopped = "stopped";
    public const string FollowupSent = "followup_sent";
    public const string TimedOut = "timed_out";

    /// <summary>A webhook said the agent finished without the pull request it was asked for: held back for a read.</summary>
    public const string FinishReported = "finish_reported";
}

/// <summary>A run's stored state cannot be used (see <see cref="RunHandoffState.FindDamage"/>, or not readable at all): the run is refused, never started over.</summary>
public sealed class UnreadableRunStateException(long runId, string reason, Exception? inner = null)
    : Exception($"The stored state of run {runId} cannot be used: {reason}.", inner)
{
    public long RunId => runId;

    /// <summary>What is wrong with the state, in the service's own words (never a parser's message).</summary>
    public string Reason => reason;
}
