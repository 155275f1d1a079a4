using System.Globalization;
using System.Text.Json;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Repositories;
using HandoffDapr.Core.Serialization;
using Microsoft.Extensions.Logging;

namespace HandoffDapr.Core.Providers.Cursor;

/// <summary>Cursor background agents (API v0) over any <see cref="IProviderTransport"/>.</summary>
public sealed class CursorAgentsProvider(
    IProviderTransport transport,
    TimeProvider timeProvider,
    ILogger<CursorAgentsProvider> logger,
    string? model = null) : ICodingAgentProvider
{
    private readonly ProviderExchange exchange = new(transport, timeProvider, logger, "Cursor", ProviderFailureClassifier.FromResponse, ErrorMessage);

    public const string Name = "cursor_background_agent";
    private const string AgentsPath = "v0/agents";
    private const int ListPageSize = 100;
    // Bounds one lookup's calls (a judgment, not an API limit). A lookup that runs out of pages fails as retryable
    // and unknown, so a launch is never judged "not launched" from a partial list.
    private const int MaxListPages = 20;

    public string ProviderName => Name;

    public async Task<ProviderResult<ProviderAgent>> LaunchAsync(AgentLaunchRequest request, CancellationToken cancellationToken)
    {
        var body = new CursorLaunchRequest(
            new CursorPrompt(request.Prompt),
            new CursorSource($"https://github.com/{request.Repository.FullName}", request.BaseRef),
            new CursorTarget(request.AutoCreatePr, request.BranchName),
            request.Webhook is null ? null : new CursorWebhookTarget(request.Webhook.Url.AbsoluteUri, request.Webhook.Secret),
            model);
        var payload = JsonSerializer.SerializeToUtf8Bytes(body, CursorJsonContext.Default.CursorLaunchRequest);
        return await SendForAgentAsync(new ProviderRequest(HttpMethod.Post, AgentsPath, payload), "launch", cancellationToken);
    }

    public Task<ProviderResult<ProviderAgent>> GetAgentAsync(string agentId, CancellationToken cancellationToken) =>
        AgentIds.IsValid(agentId)
            ? SendForAgentAsync(new ProviderRequest(HttpMethod.Get, $"{AgentsPath}/{agentId}"), "get", cancellationToken)
            : Task.FromResult(ProviderResult<ProviderAgent>.Failed(new ProviderFailure(FailureTypes.InvalidRequest, Retryable: false, RequestSent: false, Attempted: false)));

    public async Task<ProviderResult<ProviderAgent?>> FindAgentByBranchAsync(RepositoryName repository, string branchName, DateTimeOffset? firstSentAt, CancellationToken cancellationToken)
    {
        string? cursor = null;
        // Agents of the repository whose branch cannot be read, created since the first attempt (or at an unknown time):
        // any of them may be ours, so without a match the lookup is incomplete, never "not found".
        var unreadable = 0;
        var since = firstSentAt - ClockSlack;
        for (var page = 0; page < MaxListPages; page++)
        {
            var path = cursor is null
                ? $"{AgentsPath}?limit={ListPageSize}"
                : $"{AgentsPath}?limit={ListPageSize}&cursor={Uri.EscapeDataString(cursor)}";
            var answer = await SendAsync(new ProviderRequest(HttpMethod.Get, path), "list", cancellationToken);
            if (answer.Failure is { } failure)
            {
                return ProviderResult<ProviderAgent?>.Failed(failure);
            }

            if (ReadPage(answer.Response!, repository, branchName, since, ref unreadable, out cursor) is { } decided)
            {
                return decided;
            }

            if (string.IsNullOrEmpty(cursor))
            {
                return unreadable > 0 ? exchange.ReadsIncomplete(unreadable) : ProviderResult<ProviderAgent?>.Success(null);
            }
        }

        return exchange.ListExhausted(MaxListPages);
    }

    /// <summary>
    /// One page of the list read: the lookup's answer when the page decides it (ours, or a page that cannot be read),
    /// else null, with the repository's agents that show no branch (and may be ours) counted in
    /// <paramref name="unreadable"/> and the next page's cursor (null on the last page).
    /// </summary>
    private ProviderResult<ProviderAgent?>? ReadPage(
        ProviderResponse response, RepositoryName repository, string branchName, DateTimeOffset? since,
        ref int unreadable, out string? cursor)
    {
        cursor = null;
        try
        {
            using var document = JsonDocument.Parse(response.Body);
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("agents", out var agents)
                || agents.ValueKind != JsonValueKind.Array)
            {
                return Malformed<ProviderAgent?>(response.StatusCode, "list");
            }

            foreach (var element in agents.EnumerateArray())
            {
                if (element.ValueKind != JsonValueKind.Object)
                {
                    // Not a list of agents: passing over what may be ours would answer "none" and launch it again.
                    return Malformed<ProviderAgent?>(response.StatusCode, "list");
                }

                element.TryGetProperty("target", out var target);
                var shownBranch = ReadString(target, "branchName");
                if (!RepositoryMatches(element, repository))
                {
                    continue;
                }

                if (string.Equals(shownBranch, branchName, StringComparison.Ordinal))
                {
                    // Ours, but unreadable (no usable id): "none" would launch a second agent beside it.
                    return ReadAgent(element) is { } agent
                        ? ProviderResult<ProviderAgent?>.Success(agent)
                        : Malformed<ProviderAgent?>(response.StatusCode, "list");
                }

                if (shownBranch is null && !(CreatedAt(element) < since))
                {
                    unreadable++;
                }
            }

            if (!TryReadNextCursor(document.RootElement, out cursor))
            {
                // More pages, but where they are cannot be read: ours may be on one of them.
                return Malformed<ProviderAgent?>(response.StatusCode, "list");
            }
        }
        catch (Exception exception) when (ProviderExchange.IsUnreadable(exception))
        {
            return Malformed<ProviderAgent?>(response.StatusCode, "list");
        }

        return null;
    }

    /// <summary>Clocks differ: an agent stamped a little before our first attempt may still be its own.</summary>
    private static readonly TimeSpan ClockSlack = TimeSpan.FromMinutes(5);

    /// <summary>The next page's cursor, null on the last page (absent, null or empty); false when there is one that cannot be read.</summary>
    private static bool TryReadNextCursor(JsonElement page, out string? cursor)
    {
        cursor = null;
        if (!page.TryGetProperty("nextCursor", out var next) || next.ValueKind == JsonValueKind.Null)
        {
            return true;
        }

        // A lone surrogate throws here, read as an unreadable answer.
        cursor = next.ValueKind == JsonValueKind.String ? next.GetString() : null;
        return next.ValueKind == JsonValueKind.String;
    }

    private static DateTimeOffset? CreatedAt(JsonElement agent) =>
        ReadString(agent, "createdAt") is { } created && DateTimeOffset.TryParse(created, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var parsed)
            ? parsed
            : null;

    public Task<ProviderResult<bool>> StopAsync(string agentId, CancellationToken cancellationToken) =>
        SendForAcknowledgementAsync(agentId, "stop", default, cancellationToken);

    public Task<ProviderResult<bool>> AddFollowupAsync(string agentId, string text, CancellationToken cancellationToken) =>
        SendForAcknowledgementAsync(
            agentId,
            "followup",
            JsonSerializer.SerializeToUtf8Bytes(new CursorFollowupRequest(new CursorPrompt(text)), CursorJsonContext.Default.CursorFollowupRequest),
            cancellationToken);

    private async Task<ProviderResult<bool>> SendForAcknowledgementAsync(string agentId, string action, ReadOnlyMemory<byte> body, CancellationToken cancellationToken)
    {
        if (!AgentIds.IsValid(agentId))
        {
            return ProviderResult<bool>.Failed(new ProviderFailure(FailureTypes.InvalidRequest, Retryable: false, RequestSent: false, Attempted: false));
        }

        var answer = await SendAsync(new ProviderRequest(HttpMethod.Post, $"{AgentsPath}/{agentId}/{action}", body), action, cancellationToken);
        return answer.Failure is { } failure ? ProviderResult<bool>.Failed(failure) : ProviderResult<bool>.Success(true);
    }

    private Task<ProviderResult<ProviderAgent>> SendForAgentAsync(ProviderRequest request, string operation, CancellationToken cancellationToken) =>
        exchange.SendAndReadAsync(request, operation, ReadAgent, cancellationToken);

    private Task<(ProviderResponse? Response, ProviderFailure? Failure)> SendAsync(ProviderRequest request, string operation, CancellationToken cancellationToken) =>
        exchange.SendAsync(request, operation, cancellationToken);

    private ProviderResult<T> Malformed<T>(int statusCode, string operation) => exchange.Malformed<T>(statusCode, operation);

    private static ProviderAgent? ReadAgent(JsonElement element)
    {
        if (element.ValueKind != JsonValueKind.Object || ReadString(element, "id") is not { } id || !AgentIds.IsValid(id))
        {
            return null;
        }

        element.TryGetProperty("target", out var target);
        element.TryGetProperty("source", out var source);
        return new ProviderAgent(
            id,
            MapStatus(ReadString(element, "status")),
            ReadString(element, "name"),
            ReadString(target, "url"),
            ReadString(target, "branchName"),
            ReadString(target, "prUrl"),
            ReadString(element, "summary"),
            CreatedAt(element),
            CursorWebhook.RepositoryNamed(ReadString(source, "repository")));
    }

    public static ProviderAgentStatus MapStatus(string? status) => status?.ToUpperInvariant() switch
    {
        "CREATING" => ProviderAgentStatus.Creating,
        "RUNNING" => ProviderAgentStatus.Running,
        "FINISHED" => ProviderAgentStatus.Finished,
        "ERROR" => ProviderAgentStatus.Error,
        "EXPIRED" => ProviderAgentStatus.Expired,
        "STOPPED" => ProviderAgentStatus.Stopped,
        _ => ProviderAgentStatus.Unknown,
    };

    private static bool RepositoryMatches(JsonElement agent, RepositoryName repository)
    {
        if (!agent.TryGetProperty("source", out var source) || ReadString(source, "repository") is not { } url)
        {
            // An agent without a source cannot be ruled out: the branch name already carries the run and repository.
            return true;
        }

        // Read as a read of the agent names it (ReadAgent), and compared as the engine compares that name with the launch's:
        // a source skipped here that the engine would take for ours (github.com/acme/shop.git) answers "none" and launches
        // a second agent; one kept here that it would not (gitlab.com/acme/shop) fails every attempt on that agent.
        return repository.IsNamedBy(CursorWebhook.RepositoryNamed(url));
    }

    private static string? ReadString(JsonElement element, string property) => JsonElements.String(element, property);

    /// <summary>Cursor's error bodies vary (<c>{"error":{"message"}}</c>, <c>{"error":{"error"}}</c>, <c>{"error","message"}</c>).</summary>
    private static string? ErrorMessage(ReadOnlyMemory<byte> body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            var root = document.RootElement;
            return root.ValueKind != JsonValueKind.Object ? null
                : root.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.Object
                    ? ReadString(error, "message") ?? ReadString(error, "error") ?? ReadString(error, "code")
                    : ReadString(root, "message") ?? ReadString(root, "error");
        }
        catch (Exception exception) when (ProviderExchange.IsUnreadable(exception))
        {
            return "(unreadable body)";
        }
    }
}
