using Dapr;
using Dapr.Actors;
using Dapr.Actors.Client;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Service.Hosting;

namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// Dapr mode's <see cref="IRunOwner"/>: every call goes to the run's actor through the proxy factory from <c>AddActors</c>.
/// A trigger or event whose turn started a launch round makes the round's provider calls here, after the turn, and
/// hands the answers back to the actor. The callers' cancellation tokens are not passed on, on purpose: a round that
/// has started must finish and be recorded whether or not the HTTP caller is still there; only shutdown stops its calls,
/// after a grace (<see cref="ProviderCallCutoff"/>).
/// </summary>
public sealed class ActorRunOwner : IRunOwner, IRoundRecorder
{
    private readonly IActorProxyFactory proxies;
    private readonly ActorProxyOptions? callOptions;
    private readonly HandoffEngine engine;
    private readonly RequestDrain drain;
    private readonly CancellationToken stopping;
    private readonly bool retention;

    public ActorRunOwner(
        IActorProxyFactory proxies,
        Microsoft.Extensions.Options.IOptions<Configuration.HandoffOptions> options,
        HandoffEngine engine,
        RequestDrain drain,
        ProviderCallCutoff cutoff)
    {
        this.proxies = proxies;
        this.engine = engine;
        this.drain = drain;
        stopping = cutoff.Token;
        retention = options.Value.RunRetention is not null;
        // The SDK's factory carries the sidecar's endpoint, token and our serializer, but no request timeout.
        if (proxies is ActorProxyFactory { DefaultOptions: var defaults })
        {
            callOptions = new ActorProxyOptions
            {
                HttpEndpoint = defaults.HttpEndpoint,
                DaprApiToken = defaults.DaprApiToken,
                UseJsonSerialization = defaults.UseJsonSerialization,
                JsonSerializerOptions = defaults.JsonSerializerOptions,
                RequestTimeout = options.Value.Dapr.ActorCallTimeout,
            };
        }
    }

    public async Task<TriggerOutcome> TriggerAsync(long runId, HandoffTrigger trigger, CancellationToken cancellationToken)
    {
        // Counted by the shutdown drain from before the turn: its round, if it starts one, is finished here.
        using var call = drain.Enter();
        var outcome = await CallAsync(runId, actor => actor.TriggerAsync(trigger));
        return outcome.Round is { } round ? outcome with { Round = null, Result = await FinishRoundAsync(round) } : outcome;
    }

    /// <summary>The actor's state is the only copy: the view is built from it.</summary>
    public Task<StoredView?> GetStoredViewAsync(long runId, CancellationToken cancellationToken) => Task.FromResult<StoredView?>(null);

    /// <summary>The actor holds the run's state; a redelivery is one cheap turn there.</summary>
    public long? FindRepeatedEvent(ReadOnlySpan<byte> eventData, out byte[]? digest)
    {
        digest = null;
        return null;
    }

    public async Task<CompletionOutcome> AcceptCompletedRunAsync(RunSnapshot snapshot, byte[]? eventDigest, CancellationToken cancellationToken)
    {
        using var call = drain.Enter();
        var outcome = await CallAsync(snapshot.RunId, actor => actor.AcceptCompletedRunAsync(snapshot));
        return outcome.Round is { } round ? outcome with { Round = null, Result = await FinishRoundAsync(round) } : outcome;
    }

    /// <summary>A round cut short by shutdown is recorded (what did not answer in the grace as unknown, to reconcile); its caller is told to try again.</summary>
    private Task<HandoffResult> FinishRoundAsync(LaunchRound round) =>
        RunOwnerUnavailableException.WhenStoppedAsync(() => engine.FinishRoundAsync(round, this, stopping), stopping);

    /// <summary>Hands a round's answers to the run's actor, in a new turn.</summary>
    public Task<HandoffResult> RecordLaunchesAsync(LaunchRoundAnswers answers) =>
        CallAsync(answers.Round.RunId, actor => actor.CompleteLaunchRoundAsync(answers));

    public Task<PollVerdict> RecordPollAsync(PollAnswers answers) =>
        CallAsync(answers.Round.RunId, actor => actor.CompletePollAsync(answers));

    public Task<RunHandoffState?> GetAsync(long runId, CancellationToken cancellationToken) =>
        CallAsync(runId, actor => actor.GetStateAsync());

    public Task<DeletedRun?> FindDeletedAsync(long runId, CancellationToken cancellationToken) =>
        CallAsync(runId, actor => actor.GetDeletedAsync());

    public Task<AgentReportStatus> ApplyAgentReportAsync(long runId, AgentReport report, CancellationToken cancellationToken) =>
        CallAsync(runId, actor => actor.ApplyAgentReportAsync(report));

    /// <summary>Checked against the run's state (a short turn), sent from here, recorded in a new turn.</summary>
    public async Task<AgentCommandOutcome> StopAgentAsync(long runId, string agentId, CancellationToken cancellationToken)
    {
        using var call = drain.Enter();
        return await RunOwnerUnavailableException.WhenStoppedAsync(async () => await engine.StopAgentAsync(await GetForCommandAsync(runId, agentId), agentId, this, stopping), stopping);
    }

    public async Task<AgentCommandOutcome> AddFollowupAsync(long runId, AgentFollowup followup, CancellationToken cancellationToken)
    {
        using var call = drain.Enter();
        return await RunOwnerUnavailableException.WhenStoppedAsync(async () => await engine.AddFollowupAsync(await GetForCommandAsync(runId, followup.AgentId), followup, this, stopping), stopping);
    }

    /// <summary>
    /// The run a command is checked against; with retention on, through the actor's turn that saves a settled run first
    /// (<see cref="IHandoffRunActor.GetStateForCommandAsync"/>), so it does not expire while the provider has the command.
    /// </summary>
    private Task<RunHandoffState?> GetForCommandAsync(long runId, string agentId) =>
        retention ? CallAsync(runId, actor => actor.GetStateForCommandAsync(agentId)) : CallAsync(runId, actor => actor.GetStateAsync());

    public Task<AgentCommandOutcome> RecordCommandAsync(AgentCommandSent sent) =>
        CallAsync(sent.RunId, actor => actor.RecordAgentCommandAsync(sent));

    private async Task<T> CallAsync<T>(long runId, Func<IHandoffRunActor, Task<T>> call)
    {
        var actor = proxies.CreateActorProxy<IHandoffRunActor>(new ActorId(runId.ToString(System.Globalization.CultureInfo.InvariantCulture)), HandoffRunActor.ActorTypeName, callOptions);
        try
        {
            return await call(actor);
        }
        // The actor's answer for a run whose stored state cannot be used: refused until an operator acts.
        catch (ActorMethodInvocationException exception)
            when ((exception.InnerException as ActorInvokeException)?.ActualExceptionType == typeof(ActorRunStateDamagedException).FullName)
        {
            throw new RunOwnerUnavailableException("The run's stored state cannot be used.", exception) { DamagedState = true };
        }
        // No caller's token reaches the proxy, so a cancellation here is its request timeout: the actor may still finish the turn.
        // The SDK throws AuthenticationException for a 401/403 from the sidecar (a wrong or rotated dapr-api-token).
        catch (Exception exception) when (exception is DaprException or ActorMethodInvocationException or HttpRequestException or OperationCanceledException
            or System.Security.Authentication.AuthenticationException)
        {
            throw new RunOwnerUnavailableException("The run's actor could not be reached.", exception);
        }
    }
}
