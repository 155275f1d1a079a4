using System.Diagnostics;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Prompts;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Repositories;

namespace HandoffDapr.Core.Handoff;

/// <summary>The launches: which repositories a trigger or event launches, the round that calls the provider for them, and what its answers change.</summary>
public sealed partial class HandoffEngine
{
    /// <summary>The only repository host either provider works on; a run's <c>provider</c> names it.</summary>
    private const string GitHubHost = "github";

    /// <summary>The trigger's answer, line by line, and the launches to make for it.</summary>
    private (List<PlanLine> Plan, List<RepositoryLaunch> ToLaunch) Plan(
        RunHandoffState state, RunSnapshot snapshot, Integration integration, string? instruction, bool autoCreatePr,
        bool relaunchFailed, DateTimeOffset now)
    {
        var repositories = RepositoriesOf(snapshot);
        if (repositories.Count == 0)
        {
            return ([Refused(NoRepositories)], []);
        }

        instruction = string.IsNullOrWhiteSpace(instruction) ? null : instruction.Trim();
        var plan = new List<PlanLine>(repositories.Count);
        var toLaunch = new List<RepositoryLaunch>();
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        // The cap is per run: repositories launched by earlier triggers or events count toward it.
        var runRepositories = state.Launches.Select(launch => launch.Repository).ToHashSet(StringComparer.OrdinalIgnoreCase);
        foreach (var preference in repositories)
        {
            if (Screen(preference, out var fullName, out var baseRef) is { } refusal)
            {
                plan.Add(Refused(refusal));
                continue;
            }

            if (!seen.Add(fullName))
            {
                continue;
            }

            // Past the cap each repository is reported, not dropped: the caller sees what was left out. One the run
            // already has is never refused.
            if (runRepositories.Add(fullName) && runRepositories.Count > options.MaxRepositories)
            {
                plan.Add(Refused(new LaunchFailure(
                    fullName, FailureMessages.TooManyRepositoriesPrefix + options.MaxRepositories, FailureTypes.TooManyRepositories)));
                continue;
            }

            var (line, launch) = PlanRepository(
                state, snapshot, integration, fullName, baseRef, instruction, autoCreatePr, relaunchFailed, now);
            if (launch is not null)
            {
                toLaunch.Add(launch);
            }

            plan.Add(line);
        }

        return (plan, toLaunch);
    }

    /// <summary>
    /// The plan's line for a repository that passed the screening and the caps on repositories, and the launch to make
    /// for it, if any: none for one a launch holds (its integration's, or for an event another's) or for a refusal
    /// past the cap on generations; its failed launch tried again, or a new generation.
    /// </summary>
    private (PlanLine Line, RepositoryLaunch? Launch) PlanRepository(
        RunHandoffState state, RunSnapshot snapshot, Integration integration, string fullName, string? baseRef,
        string? instruction, bool autoCreatePr, bool relaunchFailed, DateTimeOffset now)
    {
        // An earlier generation whose agent is not failed (it finished after all) still holds the repository. But a
        // later one that failed while its agent may exist (its answer lost, its lookups never finished) is looked for
        // again by a person's trigger, as any such launch is: made before the earlier agent's finish was learnt, that
        // agent would otherwise run unseen. It is only looked for (see LookOnly): none is launched beside the live one.
        var latest = state.FindLaunch(fullName, integration.Id);
        var live = state.LaunchWithLiveAgent(fullName, integration.Id);
        var existing = relaunchFailed && live is not null
            && latest is { Phase: LaunchPhase.Failed, AgentId: null, AgentMayExist: true }
                ? latest
                : live ?? latest;
        if (existing is not null && !(relaunchFailed && IsFinishedUnsuccessfully(state, existing)))
        {
            return (LineOf(existing), null);
        }

        // A completion event never puts a second agent on a repository: one a person handed to another integration (its
        // launch under way, or its agent at work or done) holds it. Only a person's trigger chooses a second provider.
        if (!relaunchFailed && existing is null
            && state.Launches.LastOrDefault(launch => launch.IntegrationId != integration.Id
                && string.Equals(launch.Repository, fullName, StringComparison.OrdinalIgnoreCase)
                && !IsFinishedUnsuccessfully(state, launch)) is { } another)
        {
            return (LineOf(another), null);
        }

        // A launch that failed without an agent is tried again on its own branch, looking there first when its
        // attempts may have created an agent whose answer was lost (a new branch would hide it). One whose attempts
        // surely created none (refused, or ruled out by a lookup) is sent at once: in a busy repository the lookup,
        // back to its first attempt, may never finish, and the relaunch would end without ever being sent.
        if (existing is { Phase: LaunchPhase.Failed, AgentId: null })
        {
            var relaunch = existing with
            {
                Phase = existing.AgentMayExist ? LaunchPhase.OutcomeUnknown : LaunchPhase.RetryScheduled,
                OutcomeUnknown = null,
                Attempts = 0,
                BaseRef = baseRef,
                AutoCreatePr = autoCreatePr,
                Instruction = instruction,
                // Not before the Retry-After its last attempt was refused with, if that is not over.
                NextAttemptAt = existing.NextAttemptAt > now ? existing.NextAttemptAt : now,
                FailureType = null,
                UpdatedAt = now,
            };
            // One only looked for behind a live agent: the answer reports the live one, which hands the repository off.
            return (LineOf(live ?? existing), relaunch);
        }

        // A repository launched before (by any integration) gets a new generation, hence a new branch.
        var generation = state.Launches
            .Where(launch => string.Equals(launch.Repository, fullName, StringComparison.OrdinalIgnoreCase))
            .Select(launch => launch.Generation)
            .DefaultIfEmpty(0)
            .Max() + 1;
        // Each generation stays in the run's state with its agent: a repository relaunched without end would grow
        // the state past what the store takes in one save. A run stored with more (before the cap) launches no more.
        if (generation > options.MaxGenerations)
        {
            var refusal = new LaunchFailure(
                fullName,
                FailureMessages.TooManyGenerationsPrefix + options.MaxGenerations,
                FailureTypes.TooManyGenerations);
            return (Refused(refusal), null);
        }

        var launch = new RepositoryLaunch(
            fullName,
            GitHubHost,
            integration.Id,
            integration.Provider.ProviderName,
            generation,
            BranchNamer.Create(snapshot.Group?.Title, snapshot.RunId, fullName, generation),
            baseRef,
            autoCreatePr,
            instruction,
            LaunchPhase.RetryScheduled,
            Attempts: 0,
            AttemptStartedAt: null,
            NextAttemptAt: now,
            AgentId: null,
            FailureType: null,
            UpdatedAt: now);
        return (LineOf(launch), launch);
    }

    private static PlanLine Refused(LaunchFailure failure) => new(failure.RepoName, 0, 0, failure);

    /// <summary>
    /// The refusals any handoff of <paramref name="snapshot"/> makes, whatever the run's launches, the integration or the
    /// settings: <c>no_repositories</c> for a snapshot that names none, else one <c>invalid_repository</c> per repository
    /// refused for its own name, host or base branch (the name as <see cref="RepositoryName.DescribeRejected"/> makes it
    /// printable), in the snapshot's order, a repository named twice refused twice, as a trigger's answer reports them.
    /// They are in neither the stored state nor the timeline (a redelivered event must change nothing), so a reader of
    /// the run learns them from this, made by the same checks as a plan. Whether a handoff was made yet is not asked.
    /// Refusals that depend on the run's launches at the time (<c>too_many_repositories</c>, <c>too_many_generations</c>)
    /// are not here: only the trigger's answer and the log hold them.
    /// </summary>
    public static IReadOnlyList<LaunchFailure> Refusals(RunSnapshot? snapshot)
    {
        if (snapshot is null)
        {
            return [];
        }

        var repositories = RepositoriesOf(snapshot);
        return repositories.Count == 0
            ? [NoRepositories]
            : repositories.Select(preference => Screen(preference, out _, out _)).OfType<LaunchFailure>().ToList();
    }

    private static List<RepositoryPreference> RepositoriesOf(RunSnapshot snapshot) =>
        snapshot.Preferences?.Repositories?.OfType<RepositoryPreference>().ToList() ?? [];

    private static readonly LaunchFailure NoRepositories = new(null, FailureMessages.NoRepositories, FailureTypes.NoRepositories);

    /// <summary>
    /// The refusal of a repository for its own name, host or base branch, or null, with its <c>owner/name</c> and base
    /// branch (null: the repository's default), when it may be launched.
    /// </summary>
    private static LaunchFailure? Screen(RepositoryPreference preference, out string fullName, out string? baseRef)
    {
        var rawName = $"{preference.Owner}/{preference.Name}";
        // A blank base branch means "the repository's default", as a missing one does.
        baseRef = string.IsNullOrWhiteSpace(preference.BranchName) ? null : preference.BranchName;
        if (!RepositoryName.TryParse(rawName, out var repository))
        {
            fullName = "";
            return new LaunchFailure(
                RepositoryName.DescribeRejected(rawName),
                FailureMessages.InvalidRepositoryPrefix + RepositoryName.DescribeRejected(rawName),
                FailureTypes.InvalidRepository);
        }

        fullName = repository.Value.FullName;
        // Both providers work on GitHub only; a GitLab or Bitbucket owner/name would be launched on GitHub's namesake.
        var onGitHub = string.IsNullOrWhiteSpace(preference.Provider) || string.Equals(preference.Provider, GitHubHost, StringComparison.OrdinalIgnoreCase);
        var reason = !onGitHub ? FailureMessages.UnsupportedRepositoryHost
            : baseRef is not null && !GitRefName.IsValidBranch(baseRef) ? FailureMessages.InvalidBaseBranch
            : null;
        return reason is null ? null : new LaunchFailure(fullName, reason, FailureTypes.InvalidRepository);
    }

    private static PlanLine LineOf(RepositoryLaunch launch) => new(launch.Repository, launch.IntegrationId, launch.Generation);

    /// <summary>Failed repositories are launched again by a person's trigger; pending, running and completed ones are not.</summary>
    private static bool IsFinishedUnsuccessfully(RunHandoffState state, RepositoryLaunch launch) =>
        launch.Phase == LaunchPhase.Failed
        || (launch.Phase == LaunchPhase.Launched && launch.AgentId is { } id
            && state.CodingAgents.TryGetValue(id, out var agent) && agent.Status == CodingAgentStatus.Failed);

    /// <summary>
    /// A launch whose earlier attempt may have created an agent, that must not be sent again if none is found: a relaunch
    /// whose agent it replaces finished after all (a second agent would open a second pull request), or a launch whose
    /// process died during every attempt (a crash never records a failure, so the attempt limit is enforced here).
    /// </summary>
    private string? LookOnly(RunHandoffState state, RepositoryLaunch launch) =>
        !launch.NeedsReconciliation ? null
        : state.LaunchWithLiveAgent(launch.Repository, launch.IntegrationId) is { } live && live.Generation < launch.Generation ? FailureTypes.Superseded
        : launch.Attempts >= retryPolicy.Options.MaxAttempts ? FailureTypes.RetriesExhausted
        : null;

    /// <summary>
    /// Persists the intent of a round: a crash from here on leaves in-flight launches that the next wake-up reconciles.
    /// The calls must be over before the saved deadline (now + InFlightTimeout): past it, an owner that finds the intent
    /// takes it for a crash. So their own deadline starts now, before the save, which may be slow too.
    /// </summary>
    private async Task<(RunHandoffState State, LaunchRound? Round)> StartRoundAsync(
        RunHandoffState state, List<RepositoryLaunch> launches, IReadOnlyList<PlanLine> plan, IRunStateWriter writer, CancellationToken cancellationToken)
    {
        if (launches.Count == 0)
        {
            await writer.SaveAsync(state, cancellationToken);
            return (state, null);
        }

        var now = timeProvider.GetUtcNow();
        var inFlight = launches
            .Select(launch => new RoundLaunch(
                launch with
                {
                    Phase = LaunchPhase.InFlight,
                    Attempts = launch.Attempts + 1,
                    AttemptStartedAt = now,
                    // Where a lookup for this launch's agent starts. A launch not to reconcile (never attempted, or every
                    // attempt refused or ruled out by a lookup) can have created no agent before now: its window starts
                    // here, as a busy repository's tasks since a refused attempt would hide ours from the lookup. One to
                    // reconcile keeps its start (one stored before this field was kept stays unknown).
                    FirstAttemptAt = launch.NeedsReconciliation ? launch.FirstAttemptAt ?? (launch.AttemptStartedAt is null ? now : null) : now,
                    NextAttemptAt = now + options.InFlightTimeout,
                    UpdatedAt = now,
                },
                ReconcileFirst: launch.NeedsReconciliation,
                IfNotFound: LookOnly(state, launch)))
            .ToList();
        state = inFlight.Aggregate(state, (current, sent) => current.WithLaunch(sent.Launch))
            .WithTimeline(inFlight.Select(sent => new TimelineEntry(now, TimelineEvents.LaunchStarted, sent.Launch.Repository, Detail: $"attempt {sent.Launch.Attempts}")));
        await writer.SaveAsync(state, cancellationToken);
        return (state, new LaunchRound(state.RunId, state.Snapshot!, now, inFlight, plan));
    }

    /// <summary>
    /// The second half of a round, for its owner once it has let go of the run: the provider calls, then
    /// <paramref name="recorder"/>, which gives the answers to <see cref="CompleteRoundAsync"/> in a new turn. A caller
    /// that gives up (a client gone, shutdown) stops the calls not yet answered, whose outcome is then unknown; the
    /// answers are still completed before its cancellation is thrown, as agents may exist that must not be forgotten.
    /// </summary>
    public async Task<HandoffResult> FinishRoundAsync(LaunchRound round, IRoundRecorder recorder, CancellationToken cancellationToken)
    {
        var attempts = await CallProvidersAsync(round, cancellationToken);
        var result = await recorder.RecordLaunchesAsync(new LaunchRoundAnswers(round, attempts));
        cancellationToken.ThrowIfCancellationRequested();
        return result;
    }

    /// <summary>Calls the provider for every repository of the round at once (bounded); answers keep the round's order. Never throws for a cancellation.</summary>
    private async Task<LaunchAttempt[]> CallProvidersAsync(LaunchRound round, CancellationToken cancellationToken)
    {
        using var scope = BeginRunScope(round.RunId);
        var attempts = new LaunchAttempt[round.Launches.Count];
        using var budget = new RoundBudget(round.StartedAt, options.InFlightTimeout, timeProvider, cancellationToken);
        HandoffTelemetry.HandoffsInFlight.Add(1);
        try
        {
            await Parallel.ForEachAsync(
                Enumerable.Range(0, attempts.Length),
                new ParallelOptions { MaxDegreeOfParallelism = options.MaxParallelLaunches },
                async (index, _) =>
                {
                    var (launch, reconcileFirst, ifNotFound) = round.Launches[index];
                    if (budget.IsCancellationRequested)
                    {
                        // Its turn came too late (more repositories than parallel calls, or the caller gave up): nothing was
                        // sent, no attempt spent, and an earlier attempt's agent, if one may exist, must still be looked for first.
                        attempts[index] = new LaunchAttempt(
                            null, new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: reconcileFirst, RequestSent: false, Attempted: false), Reconciled: false);
                        return;
                    }

                    attempts[index] = await AttemptAsync(round, launch, reconcileFirst, ifNotFound, budget.Token);
                });
        }
        finally
        {
            HandoffTelemetry.HandoffsInFlight.Add(-1);
        }

        return attempts;
    }

    /// <summary>
    /// Records a round's answers in the run's current state, in a new turn of its owner, and gives the trigger's answer
    /// from it. Not cancellable: agents now exist at the provider and must not be forgotten.
    /// </summary>
    public async Task<HandoffResult> CompleteRoundAsync(RunHandoffState? current, LaunchRoundAnswers answers, IRunStateWriter writer)
    {
        var round = answers.Round;
        if (current is null || current.RunId != round.RunId || answers.Attempts.Count != round.Launches.Count)
        {
            LogRoundDropped(round.RunId);
            return HandoffResult.Empty;
        }

        var counted = new TurnMeasurements();
        var state = Apply(current, round.Launches, answers.Attempts, counted);
        await writer.SaveAsync(state, CancellationToken.None);
        counted.Publish();
        return Summarize(state, round.Plan);
    }

    private async Task<LaunchAttempt> AttemptAsync(LaunchRound round, RepositoryLaunch launch, bool reconcileFirst, string? ifNotFound, CancellationToken cancellationToken)
    {
        using var activity = HandoffTelemetry.StartLaunchAttempt(round.RunId, launch.Repository, launch.IntegrationId, launch.Attempts);
        var started = timeProvider.GetTimestamp();
        LaunchAttempt outcome;
        // Whether a lookup reached the provider before the launch's own step (which the outcome's failure describes).
        var lookedUp = false;
        // Caught here, not by the round, so the attempt's span and duration say what became of it.
        try
        {
            (outcome, lookedUp) = await CallProviderAsync(round, launch, reconcileFirst, ifNotFound, cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Unanswered in time, or the caller gave up: the request may be out, so the next attempt reconciles first.
            outcome = new LaunchAttempt(null, ProviderFailureClassifier.Unanswered, Reconciled: false);
        }
        catch (Exception exception)
        {
            // A fault in a provider client (a cancellation the round did not ask for included: its own time-out, say)
            // must not lose the other repositories' answers: this one's outcome is unknown (the request may be out), so
            // its next attempt looks for an agent first.
            LogProviderFaulted(round.RunId, "launch", exception.GetType().Name);
            outcome = NoUsableAnswer;
        }

        // A launch that reached no provider (its integration gone, its prompt over the cap, an open circuit, its lookup
        // refused by the open circuit too) took no time at the provider: its zero would pull down the percentiles alerted on.
        if (lookedUp || outcome.Failure is not { Attempted: false })
        {
            HandoffTelemetry.LaunchDuration.Record(timeProvider.GetElapsedTime(started).TotalSeconds, new KeyValuePair<string, object?>("handoff.integration_id", launch.IntegrationId));
        }

        activity?.SetTag("handoff.outcome", outcome.Agent is not null ? (outcome.Reconciled ? "reconciled" : "launched") : outcome.Failure!.FailureType);
        if (outcome.Failure is not null)
        {
            activity?.SetStatus(ActivityStatusCode.Error, outcome.Failure.FailureType);
        }

        return outcome;
    }

    /// <returns>The attempt's outcome, and whether a lookup before the launch's own step reached the provider.</returns>
    private async Task<(LaunchAttempt Outcome, bool LookedUp)> CallProviderAsync(
        LaunchRound round, RepositoryLaunch launch, bool reconcileFirst, string? ifNotFound, CancellationToken cancellationToken)
    {
        // An integration removed from the settings since the round started: nothing can be sent.
        if (integrations.Find(launch.IntegrationId) is not { } integration)
        {
            return (new LaunchAttempt(null, new ProviderFailure(FailureTypes.InvalidRequest, Retryable: false, OutcomeUnknown: reconcileFirst, RequestSent: false, Attempted: false), Reconciled: false), false);
        }

        RepositoryName.TryParse(launch.Repository, out var repository);

        if (reconcileFirst)
        {
            var found = await integration.Provider.FindAgentByBranchAsync(repository!.Value, launch.BranchName, launch.FirstAttemptAt, cancellationToken);
            if (!found.IsSuccess)
            {
                // Still not known whether an agent exists: the next attempt must look again. Its failure says whether the
                // lookup was made (an open circuit refuses it before any request).
                return (new LaunchAttempt(null, found.Failure! with { OutcomeUnknown = true }, Reconciled: false), false);
            }

            if (found.Value is { } existing)
            {
                // Logged when the round is recorded (Apply), as adopted, not launched: it may yet be refused there.
                return (new LaunchAttempt(existing, null, Reconciled: true), true);
            }

            if (ifNotFound is not null)
            {
                return (new LaunchAttempt(null, new ProviderFailure(ifNotFound, Retryable: false, RequestSent: false), Reconciled: false), true);
            }
        }

        // Room is left for what the provider adds (Copilot: the handoff reference line).
        var promptCap = integration.PromptMaxLength - integration.Provider.PromptReserve;
        var prompt = PromptBuilder.Build(round.Snapshot, launch.Instruction, launch.AutoCreatePr, promptCap);
        if (prompt.Length > promptCap)
        {
            // Only the opening and the instruction are left, and they do not fit: the instruction was accepted under a
            // larger cap (the settings were lowered since). It is never cut, so the launch cannot be made.
            LogPromptOverCap(round.RunId, launch.Repository, prompt.Length, promptCap);
            return (new LaunchAttempt(null, new ProviderFailure(FailureTypes.InvalidRequest, Retryable: false, RequestSent: false, Attempted: false), Reconciled: false), reconcileFirst);
        }

        // The run id rides on the webhook URL so the report reaches the run's owner without an index; the signature still decides trust.
        var webhook = integration.Webhook is { } hook ? hook with { Url = new Uri($"{hook.Url.AbsoluteUri}?run_id={round.RunId}") } : null;
        var request = new AgentLaunchRequest(prompt, repository!.Value, launch.BaseRef, launch.BranchName, launch.AutoCreatePr, webhook);
        var result = await integration.Provider.LaunchAsync(request, cancellationToken);
        return (new LaunchAttempt(result.Value, result.Failure, Reconciled: false), reconcileFirst);
    }

    /// <summary>An attempt with no answer its launch can take: its outcome unknown, so the next attempt looks first.</summary>
    private static readonly LaunchAttempt NoUsableAnswer =
        new(null, ProviderFailureClassifier.UnusableAnswer, Reconciled: false);

    /// <summary>
    /// The round's answers, each applied to its launch as the run now has it: one the launch moved on from as a late
    /// answer (<see cref="ApplyLate"/>), any other as the agent it names or the failure it reports.
    /// </summary>
    private RunHandoffState Apply(
        RunHandoffState state, IReadOnlyList<RoundLaunch> sent, IReadOnlyList<LaunchAttempt> attempts,
        TurnMeasurements counted)
    {
        var now = timeProvider.GetUtcNow();
        var timeline = new List<TimelineEntry>(sent.Count);
        for (var i = 0; i < sent.Count; i++)
        {
            var outcome = attempts[i];
            var launch = state.Launches.FirstOrDefault(stored => stored.IntegrationId == sent[i].Launch.IntegrationId && stored.Generation == sent[i].Launch.Generation
                && string.Equals(stored.Repository, sent[i].Launch.Repository, StringComparison.OrdinalIgnoreCase));
            if (launch is not { Phase: LaunchPhase.InFlight } || launch.Attempts != sent[i].Launch.Attempts || launch.AttemptStartedAt != sent[i].Launch.AttemptStartedAt)
            {
                state = ApplyLate(state, sent[i].Launch, launch, outcome, now, timeline, counted);
                continue;
            }

            outcome = ScreenedOutcome(state, launch, outcome, counted);
            state = outcome.Agent is { } agent
                ? ApplyAgent(state, launch, agent, outcome.Reconciled, now, timeline, counted)
                : ApplyFailure(state, launch, outcome.Failure!, now, timeline, counted);
        }

        return PollingIfActive(state.WithTimeline(timeline), now);
    }

    /// <summary>
    /// The attempt's outcome as its launch takes it: an agent of another launch or of another repository is taken as
    /// no answer, an invalid response whose outcome is unknown.
    /// </summary>
    private LaunchAttempt ScreenedOutcome(
        RunHandoffState state, RepositoryLaunch launch, LaunchAttempt outcome, TurnMeasurements counted)
    {
        if (outcome.Agent is { } answered && OfAnotherLaunch(state, launch, answered) is { } other)
        {
            // One agent cannot be two launches' (a provider answering garbage): not an answer for this launch, which
            // may have created its own agent, so it is looked for first at its next attempt. One on another launch's
            // branch is that launch's even before it has found it (its answer lost): taken here, that launch's lookups
            // would find it followed by this one and never end, and this launch's own agent would never be looked for.
            QueueAgentOfAnotherLaunchLine(counted, state.RunId, launch.Repository, answered.Id, other.Repository);
            outcome = NoUsableAnswer;
        }

        if (outcome.Agent is { } named
            && IsOfAnotherRepository(state.RunId, named, launch, outcome.Reconciled ? "reconcile" : "launch", counted))
        {
            // An agent of another repository is no answer for this launch (a provider answering garbage): taken as its
            // agent, every later report of it would be refused, and the agent the launch may have created never
            // followed. The launch's own agent is looked for first at its next attempt.
            outcome = NoUsableAnswer;
        }

        return outcome;
    }

    /// <summary>
    /// The line <see cref="ScreenedOutcome"/> logs, made here: a lambda there would capture its parameters, and its
    /// closure be made for every answer screened, not only for one refused.
    /// </summary>
    private void QueueAgentOfAnotherLaunchLine(
        TurnMeasurements counted, long runId, string repository, string agentId, string otherRepository) =>
        counted.Log(() => LogAgentOfAnotherLaunch(runId, repository, agentId, otherRepository));

    /// <summary>The provider's branch name, logged bounded: as long as a branch we ask for may be.</summary>
    private const int MaxLoggedBranch = 255;

    /// <summary>
    /// The agent an attempt launched, or found by its lookup (<paramref name="reconciled"/>), taken as its launch's.
    /// </summary>
    private RunHandoffState ApplyAgent(
        RunHandoffState state, RepositoryLaunch launch, ProviderAgent agent, bool reconciled, DateTimeOffset now,
        List<TimelineEntry> timeline, TurnMeasurements counted)
    {
        if (reconciled)
        {
            counted.Log(() => LogReconciled(state.RunId, launch.Repository, agent.Id, FoundByLookup));
        }
        else
        {
            counted.Log(() => LogLaunched(state.RunId, launch.Repository, agent.Id, launch.Attempts));
            if (agent.BranchName is { Length: > 0 } shown && !string.Equals(shown, launch.BranchName, StringComparison.Ordinal)
                && integrations.Find(launch.IntegrationId)?.Provider.FindsAgentsByBranch == true)
            {
                // Nothing is wrong with this launch; but one whose answer is lost would not be found by its branch, and
                // would be launched again. Said, so that an operator learns the provider renames before that happens.
                counted.Log(() => LogLaunchBranchRenamed(
                    state.RunId, launch.Repository, agent.Id, launch.BranchName, Serialization.PrintableText.Bounded(shown, MaxLoggedBranch)));
            }
        }

        state = WithAgentOf(state, launch, agent, now, counted);
        timeline.Add(new TimelineEntry(
            now, reconciled ? TimelineEvents.Reconciled : TimelineEvents.Launched, launch.Repository, agent.Id));
        counted.Count(
            HandoffTelemetry.Launches,
            Tag("outcome", reconciled ? "reconciled" : "launched"),
            Tag("failure_type", "none"));
        return state;
    }

    /// <summary>A failed attempt: its launch tried again if the failure and its attempts allow, else failed.</summary>
    private RunHandoffState ApplyFailure(
        RunHandoffState state, RepositoryLaunch launch, ProviderFailure failure, DateTimeOffset now,
        List<TimelineEntry> timeline, TurnMeasurements counted)
    {
        // No call was made (open circuit, a turn that came too late): the attempt does not count against the limit.
        // A refused connection does: otherwise an unreachable provider would be retried forever at the first delay.
        var attemptsMade = failure.Attempted ? launch.Attempts : launch.Attempts - 1;
        // A last allowed attempt whose answer was lost (a time-out, a cut connection, shutdown's grace) may have made
        // an agent: it is left to one lookup, which ends the launch if none is found (see LookOnly), as a crash at that
        // moment would leave it. Not a lookup-only attempt past the limit: a crash there ends it without a call too.
        if (retryPolicy.CanRetry(failure, attemptsMade)
            || (failure.Retryable && failure.OutcomeUnknown && attemptsMade == retryPolicy.Options.MaxAttempts))
        {
            return ScheduleRetry(state, launch, failure, attemptsMade, now, timeline, counted);
        }

        return FailLaunch(state, launch, failure, attemptsMade, now, timeline, counted);
    }

    /// <summary>
    /// A failed attempt's launch waiting for its next attempt, which looks first for an agent if one may exist.
    /// </summary>
    private RunHandoffState ScheduleRetry(
        RunHandoffState state, RepositoryLaunch launch, ProviderFailure failure, int attemptsMade, DateTimeOffset now,
        List<TimelineEntry> timeline, TurnMeasurements counted)
    {
        // A round that sent nothing (an open circuit, a turn too late, shutdown) waits the first delay: the back-off
        // its earlier failures reached (up to RetryMaxDelay) is for a provider that failed, not for one never asked.
        var retryAt = now
            + retryPolicy.DelayAfter(failure.Attempted ? Math.Max(1, attemptsMade) : 1, failure.RetryAfter);
        var phase = failure.OutcomeUnknown ? LaunchPhase.OutcomeUnknown : LaunchPhase.RetryScheduled;
        state = state.WithLaunch(launch with
        {
            Phase = phase,
            Attempts = attemptsMade,
            NextAttemptAt = retryAt,
            FailureType = failure.FailureType,
            UpdatedAt = now,
        });
        timeline.Add(new TimelineEntry(
            now,
            TimelineEvents.RetryScheduled,
            launch.Repository,
            Detail: $"{failure.FailureType}; next attempt at {retryAt:O}"));
        if (phase == LaunchPhase.OutcomeUnknown)
        {
            counted.Log(() => LogOutcomeUnknownRetryScheduled(
                state.RunId, launch.Repository, failure.FailureType, attemptsMade, LogTime(retryAt)));
        }
        else
        {
            counted.Log(() => LogRetryScheduled(
                state.RunId, launch.Repository, failure.FailureType, attemptsMade, LogTime(retryAt)));
        }

        counted.Count(
            HandoffTelemetry.Launches, Tag("outcome", "retry_scheduled"), Tag("failure_type", failure.FailureType));
        counted.Count(HandoffTelemetry.RetriesScheduled, Tag("failure_type", failure.FailureType));
        return state;
    }

    /// <summary>A failed attempt's launch failed for good, until a person's trigger launches it again.</summary>
    private RunHandoffState FailLaunch(
        RunHandoffState state, RepositoryLaunch launch, ProviderFailure failure, int attemptsMade, DateTimeOffset now,
        List<TimelineEntry> timeline, TurnMeasurements counted)
    {
        var failureType = failure.Retryable ? FailureTypes.RetriesExhausted : failure.FailureType;
        // The failure says whether an agent may exist: a lost answer or an unfinished lookup carries OutcomeUnknown
        // (an attempt that looked first and failed keeps it), a refusal after a lookup that found none does not.
        // A last attempt refused with a Retry-After keeps it: a person's relaunch is not sent before it is over either.
        state = state.WithLaunch(launch with
        {
            Phase = LaunchPhase.Failed,
            Attempts = attemptsMade,
            NextAttemptAt = failure.RetryAfter is { } asked ? now + asked : null,
            FailureType = failureType,
            UpdatedAt = now,
            OutcomeUnknown = failure.OutcomeUnknown,
        });
        timeline.Add(new TimelineEntry(now, TimelineEvents.LaunchFailed, launch.Repository, Detail: failureType));
        counted.Log(() => LogLaunchFailed(state.RunId, launch.Repository, failureType, attemptsMade));
        counted.Count(HandoffTelemetry.Launches, Tag("outcome", "failed"), Tag("failure_type", failureType));
        return state;
    }

    /// <summary>
    /// An answer that came back after the launch moved on: past its deadline a wake-up took the attempt for a crash and
    /// made another. A failure then says nothing the launch does not know; an agent it has no agent for is adopted, as
    /// reconciling would have; a different agent than the one it has is a second agent on the repository, only logged.
    /// </summary>
    private RunHandoffState ApplyLate(
        RunHandoffState state, RepositoryLaunch sent, RepositoryLaunch? launch, LaunchAttempt outcome, DateTimeOffset now, List<TimelineEntry> timeline, TurnMeasurements counted)
    {
        if (AppliedAlready(sent, launch, outcome))
        {
            // The same answers recorded again: daprd repeats an actor call whose turn saved them and then failed (at the
            // reminder). They came in time and were applied; logged again, each would read as a late answer.
            return state;
        }

        if (outcome.Agent is not { } agent || launch?.AgentId == agent.Id)
        {
            counted.Log(() => LogLateAnswer(state.RunId, sent.Repository, sent.Attempts));
            return state;
        }

        if (launch is not null && OfAnotherLaunch(state, launch, agent) is { } other)
        {
            counted.Log(() => LogAgentOfAnotherLaunch(state.RunId, launch.Repository, agent.Id, other.Repository));
            return state;
        }

        // Named as in Apply: a late lookup's answer is the reconcile's, not the launch's.
        if (launch is not null && IsOfAnotherRepository(state.RunId, agent, launch, outcome.Reconciled ? "reconcile" : "launch", counted))
        {
            return state;
        }

        if (launch is { AgentId: null })
        {
            counted.Log(() => LogReconciled(state.RunId, launch.Repository, agent.Id, outcome.Reconciled ? FoundByLateLookup : FoundByLateAnswer));
            timeline.Add(new TimelineEntry(now, TimelineEvents.Reconciled, launch.Repository, agent.Id, "answered after its deadline"));
            // The attempt's outcome, counted as the log line and the timeline name it: the attempt that took it over finds
            // the launch launched and counts nothing, so uncounted the launch had no outcome in handoff.launches at all.
            counted.Count(HandoffTelemetry.Launches, Tag("outcome", "reconciled"), Tag("failure_type", "none"));
            return WithAgentOf(state, launch, agent, now, counted);
        }

        counted.Log(() => LogAgentNotFollowed(state.RunId, sent.Repository, agent.Id));
        return state;
    }

    /// <summary>
    /// Whether the launch is as this attempt's answer left it when it was applied: launched with its agent, or waiting
    /// for a retry with a failure type (a relaunch clears it, and any later attempt has another start). A launch the
    /// attempt's answer failed for good is not told apart from one a wake-up ended meanwhile, and is logged as late.
    /// </summary>
    private static bool AppliedAlready(RepositoryLaunch sent, RepositoryLaunch? launch, LaunchAttempt outcome) =>
        launch is not null && launch.AttemptStartedAt == sent.AttemptStartedAt
        && (launch is { Phase: LaunchPhase.RetryScheduled or LaunchPhase.OutcomeUnknown, FailureType: not null }
            || (launch.Phase == LaunchPhase.Launched && launch.Attempts == sent.Attempts && outcome.Agent?.Id is { } agentId && launch.AgentId == agentId));

    /// <summary>The other launch of the run <paramref name="agent"/> is of: one that follows it, or one on whose branch it is.</summary>
    private static RepositoryLaunch? OfAnotherLaunch(RunHandoffState state, RepositoryLaunch launch, ProviderAgent agent) =>
        FollowedByAnother(state, launch, agent.Id) ?? OnAnotherLaunchsBranch(state, launch, agent);

    /// <summary>The other launch of the run that already follows <paramref name="agentId"/>, if one does.</summary>
    private static RepositoryLaunch? FollowedByAnother(RunHandoffState state, RepositoryLaunch launch, string agentId) =>
        state.LaunchOfAgent(agentId) is { } owner
            && !(owner.IntegrationId == launch.IntegrationId && owner.Generation == launch.Generation
                && string.Equals(owner.Repository, launch.Repository, StringComparison.OrdinalIgnoreCase))
            ? owner
            : null;

    /// <summary>
    /// The other launch of the run whose branch <paramref name="agent"/> reports, if one does. The branch is not compared
    /// otherwise (GitHub names a task's branch itself, and Cursor may too); but ours are made per run, repository and
    /// generation, so an agent on another launch's branch is that launch's.
    /// </summary>
    private static RepositoryLaunch? OnAnotherLaunchsBranch(RunHandoffState state, RepositoryLaunch launch, ProviderAgent agent) =>
        agent.BranchName is { Length: > 0 } branch && !string.Equals(branch, launch.BranchName, StringComparison.Ordinal)
            ? state.Launches.FirstOrDefault(other => string.Equals(other.BranchName, branch, StringComparison.Ordinal))
            : null;

    private static HandoffResult Summarize(RunHandoffState state, IReadOnlyList<PlanLine> plan)
    {
        var successes = new List<LaunchSuccess>();
        var failures = new List<LaunchFailure>();
        var retries = new List<ScheduledRetry>();
        foreach (var line in plan)
        {
            if (line.Refused is { } refused)
            {
                failures.Add(refused);
            }
            else if (state.Launches.FirstOrDefault(launch => launch.IntegrationId == line.IntegrationId && launch.Generation == line.Generation
                && string.Equals(launch.Repository, line.Repository, StringComparison.OrdinalIgnoreCase)) is { } launch)
            {
                Describe(state, launch, successes, failures, retries);
            }
        }

        return new HandoffResult(successes, failures, retries);
    }

    private static void Describe(RunHandoffState state, RepositoryLaunch launch, List<LaunchSuccess> successes, List<LaunchFailure> failures, List<ScheduledRetry> retries)
    {
        if (launch.Phase == LaunchPhase.Launched && launch.AgentId is { } id && state.CodingAgents.TryGetValue(id, out var agent))
        {
            successes.Add(new LaunchSuccess(launch.Repository, agent));
        }
        else if (launch.IsAwaitingWork)
        {
            // A launch under way (another round is at the provider) reports its attempt and its deadline.
            var attempt = launch.Phase == LaunchPhase.InFlight ? launch.Attempts : launch.Attempts + 1;
            retries.Add(new ScheduledRetry(launch.Repository, launch.NextAttemptAt!.Value, attempt, launch.FailureType));
        }
        else
        {
            failures.Add(new LaunchFailure(launch.Repository, FailureMessages.LaunchFailed, launch.FailureType ?? FailureTypes.InvalidRequest));
        }
    }
}
