using System.Collections.Concurrent;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Repositories;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>An in-memory provider for host-level unit tests: records launches, fails repositories on request.</summary>
public sealed class ScriptedProvider : ICodingAgentProvider
{
    private readonly ConcurrentDictionary<string, ProviderFailure> failures = new(StringComparer.OrdinalIgnoreCase);
    private int sequence;

    public ConcurrentQueue<AgentLaunchRequest> Launches { get; } = new();

    /// <summary>The agents asked to stop, in order.</summary>
    public ConcurrentQueue<string> Stops { get; } = new();

    public string ProviderName => "cursor_background_agent";

    public void Fail(string repository, ProviderFailure failure) => failures[repository] = failure;

    public void Heal(string repository) => failures.TryRemove(repository, out _);

    /// <summary>Runs as each launch reaches the provider, before it is answered.</summary>
    public Action<AgentLaunchRequest>? OnLaunch { get; set; }

    /// <summary>Awaited before each launch is answered, with the call's cancellation: a provider that is slow to answer.</summary>
    public Func<CancellationToken, Task>? Answering { get; set; }

    public async Task<ProviderResult<ProviderAgent>> LaunchAsync(AgentLaunchRequest request, CancellationToken cancellationToken)
    {
        OnLaunch?.Invoke(request);
        Launches.Enqueue(request);
        if (Answering is { } answering)
        {
            await answering(cancellationToken);
        }

        if (failures.TryGetValue(request.Repository.FullName, out var failure))
        {
            return ProviderResult<ProviderAgent>.Failed(failure);
        }

        var id = $"bc-{Interlocked.Increment(ref sequence)}";
        return ProviderResult<ProviderAgent>.Success(new ProviderAgent(id, ProviderAgentStatus.Creating, "Fix", $"https://cursor.com/agents?id={id}", request.BranchName));
    }

    public Task<ProviderResult<ProviderAgent>> GetAgentAsync(string agentId, CancellationToken cancellationToken) =>
        Task.FromResult(ProviderResult<ProviderAgent>.Success(new ProviderAgent(agentId, ProviderAgentStatus.Running)));

    public Task<ProviderResult<ProviderAgent?>> FindAgentByBranchAsync(RepositoryName repository, string branchName, DateTimeOffset? firstSentAt, CancellationToken cancellationToken) =>
        Task.FromResult(ProviderResult<ProviderAgent?>.Success(null));

    public Task<ProviderResult<bool>> StopAsync(string agentId, CancellationToken cancellationToken)
    {
        Stops.Enqueue(agentId);
        return Task.FromResult(ProviderResult<bool>.Success(true));
    }

    public Task<ProviderResult<bool>> AddFollowupAsync(string agentId, string text, CancellationToken cancellationToken) => Task.FromResult(ProviderResult<bool>.Success(true));

    public static ProviderFailure ServerError => new(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 500);
}
