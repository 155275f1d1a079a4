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
/// The callers' cancellation tokens are not passed on, on purpose: a turn that has started a launch must finish it and
/// save what it learned, whether or not the HTTP caller is still there (the engine does the same with its last save).
/// </summary>
public sealed class ActorRunOwner : IRunOwner
{
    private readonly IActorProxyFactory proxies;
    private readonly ActorProxyOptions? callOptions;

    public ActorRunOwner(IActorProxyFactory proxies, Microsoft.Extensions.Options.IOptions<Configuration.HandoffOptions> options)
    {
        this.proxies = proxies;
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

    public Task<TriggerOutcome> TriggerAsync(long runId, HandoffTrigger trigger, CancellationToken cancellationToken) =>
        CallAsync(runId, actor => actor.TriggerAsync(trigger));

    public Task<CompletionOutcome> AcceptCompletedRunAsync(RunSnapshot snapshot, CancellationToken cancellationToken) =>
        CallAsync(snapshot.RunId, actor => actor.AcceptCompletedRunAsync(snapshot));

    public Task<RunHandoffState?> GetAsync(long runId, CancellationToken cancellationToken) =>
        CallAsync(runId, actor => actor.GetStateAsync());

    public Task<AgentReportStatus> ApplyAgentReportAsync(long runId, AgentReport report, CancellationToken cancellationToken) =>
        CallAsync(runId, actor => actor.ApplyAgentReportAsync(report));

    public Task<AgentCommandOutcome> StopAgentAsync(long runId, string agentId, CancellationToken cancellationToken) =>
        CallAsync(runId, actor => actor.StopAgentAsync(agentId));

    public Task<AgentCommandOutcome> AddFollowupAsync(long runId, AgentFollowup followup, CancellationToken cancellationToken) =>
        CallAsync(runId, actor => actor.AddFollowupAsync(followup));

    private async Task<T> CallAsync<T>(long runId, Func<IHandoffRunActor, Task<T>> call)
    {
        var actor = proxies.CreateActorProxy<IHandoffRunActor>(new ActorId(runId.ToString(System.Globalization.CultureInfo.InvariantCulture)), HandoffRunActor.ActorTypeName, callOptions);
        try
        {
            return await call(actor);
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
