using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Repositories;
using HandoffDapr.Core.Serialization;
using Microsoft.Extensions.Logging;

namespace HandoffDapr.Core.Providers.Copilot;

/// <summary>
/// GitHub Copilot coding agent through GitHub's agent tasks REST API (public preview). No webhooks: status comes
/// from the polling fallback. No stop or follow-up in the API: those answer <c>not_supported</c>.
/// </summary>
public sealed class CopilotAgentTasksProvider(
    IProviderTransport transport,
    TimeProvider timeProvider,
    ILogger<CopilotAgentTasksProvider> logger,
    string? model = null) : ICodingAgentProvider
{
    private readonly ProviderExchange exchange = new(transport, timeProvider, logger, "GitHub agent tasks", Classify, Message);

    public const string Name = "github_copilot_agent";
    public const string ApiVersion = "2026-03-10";
    private const int ListPageSize = 100;
    private const int MaxListPages = 10;

    private static readonly IReadOnlyDictionary<string, string> GitHubHeaders = new Dictionary<string, string>
    {
        ["Accept"] = "application/vnd.github+json",
        ["X-GitHub-Api-Version"] = ApiVersion,
    };

    public string ProviderName => Name;

    public async Task<ProviderResult<ProviderAgent>> LaunchAsync(AgentLaunchRequest request, CancellationToken cancellationToken)
    {
        // The head branch is ours, so a launch whose answer was lost can be found again by it.
        var body = JsonSerializer.SerializeToUtf8Bytes(
            new CopilotTaskRequest(request.Prompt, request.BaseRef, request.BranchName, request.AutoCreatePr, model),
            CopilotJsonContext.Default.CopilotTaskRequest);
        return await exchange.SendAndReadAsync(
            new ProviderRequest(HttpMethod.Post, $"agents/repos/{request.Repository.Owner}/{request.Repository.Name}/tasks", body, GitHubHeaders), "launch", ReadTaskElement, cancellationToken);
    }

    public async Task<ProviderResult<ProviderAgent>> GetAgentAsync(string agentId, CancellationToken cancellationToken)
    {
        if (!AgentIds.IsValid(agentId))
        {
            return ProviderResult<ProviderAgent>.Failed(new ProviderFailure(FailureTypes.InvalidRequest, Retryable: false, RequestSent: false));
        }

        return await exchange.SendAndReadAsync(new ProviderRequest(HttpMethod.Get, $"agents/tasks/{agentId}", Headers: GitHubHeaders), "get", ReadTaskElement, cancellationToken);
    }

    public async Task<ProviderResult<ProviderAgent?>> FindAgentByBranchAsync(RepositoryName repository, string branchName, CancellationToken cancellationToken)
    {
        for (var page = 1; page <= MaxListPages; page++)
        {
            var path = $"agents/repos/{repository.Owner}/{repository.Name}/tasks?per_page={ListPageSize}&page={page}";
            var answer = await SendAsync(new ProviderRequest(HttpMethod.Get, path, Headers: GitHubHeaders), "list", cancellationToken);
            if (answer.Failure is { } failure)
            {
                return ProviderResult<ProviderAgent?>.Failed(failure);
            }

            try
            {
                using var document = JsonDocument.Parse(answer.Response!.Body);
                if (!document.RootElement.TryGetProperty("tasks", out var tasks) || tasks.ValueKind != JsonValueKind.Array)
                {
                    return Malformed<ProviderAgent?>(answer.Response.StatusCode, "list");
                }

                foreach (var task in tasks.EnumerateArray())
                {
                    if (ReadTaskElement(task) is { } agent && string.Equals(agent.BranchName, branchName, StringComparison.Ordinal))
                    {
                        return ProviderResult<ProviderAgent?>.Success(agent);
                    }
                }

                if (tasks.GetArrayLength() < ListPageSize)
                {
                    return ProviderResult<ProviderAgent?>.Success(null);
                }
            }
            catch (JsonException)
            {
                return Malformed<ProviderAgent?>(answer.Response!.StatusCode, "list");
            }
        }

        return exchange.ListExhausted(MaxListPages);
    }

    public Task<ProviderResult<bool>> StopAsync(string agentId, CancellationToken cancellationToken) => NotSupported();

    public Task<ProviderResult<bool>> AddFollowupAsync(string agentId, string text, CancellationToken cancellationToken) => NotSupported();

    private static Task<ProviderResult<bool>> NotSupported() =>
        Task.FromResult(ProviderResult<bool>.Failed(new ProviderFailure(FailureTypes.NotSupported, Retryable: false, RequestSent: false)));

    /// <summary>GitHub's task states onto the provider-neutral statuses.</summary>
    public static ProviderAgentStatus MapState(string? state) => state?.ToLowerInvariant() switch
    {
        "queued" => ProviderAgentStatus.Creating,
        "in_progress" or "idle" or "waiting_for_user" => ProviderAgentStatus.Running,
        "completed" => ProviderAgentStatus.Finished,
        "failed" => ProviderAgentStatus.Error,
        "timed_out" => ProviderAgentStatus.Expired,
        "cancelled" => ProviderAgentStatus.Stopped,
        _ => ProviderAgentStatus.Unknown,
    };

    /// <summary>
    /// What GitHub's answers mean for a handoff: 401 a rejected token, 402 or a quota message no quota left,
    /// 403 a missing Copilot licence or repository permission, 404 a repository the token cannot see.
    /// </summary>
    public static ProviderFailure Classify(ProviderResponse response, DateTimeOffset now)
    {
        var message = Message(response.Body);
        return response.StatusCode switch
        {
            (int)HttpStatusCode.PaymentRequired => new ProviderFailure(FailureTypes.QuotaExceeded, Retryable: false, StatusCode: response.StatusCode),
            (int)HttpStatusCode.Forbidden or (int)HttpStatusCode.TooManyRequests when Mentions(message, "quota", "premium request", "usage limit") =>
                new ProviderFailure(FailureTypes.QuotaExceeded, Retryable: false, StatusCode: response.StatusCode),
            (int)HttpStatusCode.Forbidden when Mentions(message, "rate limit") =>
                new ProviderFailure(FailureTypes.RateLimited, Retryable: true, RetryAfter: ProviderFailureClassifier.ParseRetryAfter(response.RetryAfter, now) ?? TimeSpan.FromMinutes(1), StatusCode: response.StatusCode),
            (int)HttpStatusCode.Forbidden when Mentions(message, "licen", "copilot is not", "not enabled", "subscription") =>
                new ProviderFailure(FailureTypes.NoCopilotLicense, Retryable: false, StatusCode: response.StatusCode),
            (int)HttpStatusCode.Forbidden or (int)HttpStatusCode.NotFound =>
                new ProviderFailure(FailureTypes.RepositoryAccess, Retryable: false, StatusCode: response.StatusCode),
            _ => ProviderFailureClassifier.FromResponse(response, now),
        };
    }

    private static ProviderAgent? ReadTaskElement(JsonElement task)
    {
        if (task.ValueKind != JsonValueKind.Object || JsonElements.String(task, "id") is not { } id || !AgentIds.IsValid(id))
        {
            return null;
        }

        var created = JsonElements.String(task, "created_at") is { } text
            && DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var parsed)
                ? parsed
                : (DateTimeOffset?)null;
        return new ProviderAgent(
            id,
            MapState(JsonElements.String(task, "state")),
            JsonElements.String(task, "name"),
            JsonElements.String(task, "html_url"),
            HeadRef(task),
            PullRequestUrl(task),
            Summary: null,
            created);
    }

    /// <summary>The task's head branch: on the task, else on its latest session.</summary>
    private static string? HeadRef(JsonElement task)
    {
        if (JsonElements.String(task, "head_ref") is { } head)
        {
            return head;
        }

        if (task.TryGetProperty("sessions", out var sessions) && sessions.ValueKind == JsonValueKind.Array)
        {
            foreach (var session in sessions.EnumerateArray().Reverse())
            {
                if (JsonElements.String(session, "head_ref") is { } sessionHead)
                {
                    return sessionHead;
                }
            }
        }

        return null;
    }

    /// <summary>The pull request is one of the task's artifacts (a GitHub resource of a pull-request type).</summary>
    private static string? PullRequestUrl(JsonElement task)
    {
        if (!task.TryGetProperty("artifacts", out var artifacts) || artifacts.ValueKind != JsonValueKind.Array)
        {
            return null;
        }

        foreach (var artifact in artifacts.EnumerateArray())
        {
            var type = JsonElements.String(artifact, "type") ?? string.Empty;
            if (!type.Contains("pull", StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            var data = artifact.TryGetProperty("data", out var inner) ? inner : artifact;
            if ((JsonElements.String(data, "html_url") ?? JsonElements.String(data, "url")) is { } url
                && url.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
            {
                return url;
            }
        }

        return null;
    }

    private Task<(ProviderResponse? Response, ProviderFailure? Failure)> SendAsync(ProviderRequest request, string operation, CancellationToken cancellationToken) =>
        exchange.SendAsync(request, operation, cancellationToken);

    private ProviderResult<T> Malformed<T>(int statusCode, string operation) => exchange.Malformed<T>(statusCode, operation);

    private static string? Message(ReadOnlyMemory<byte> body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            return JsonElements.String(document.RootElement, "message");
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static bool Mentions(string? message, params string[] words) =>
        message is not null && words.Any(word => message.Contains(word, StringComparison.OrdinalIgnoreCase));
}

internal sealed record CopilotTaskRequest(
    string Prompt,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? BaseRef,
    string HeadRef,
    bool CreatePullRequest,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Model);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(CopilotTaskRequest))]
internal sealed partial class CopilotJsonContext : JsonSerializerContext;
