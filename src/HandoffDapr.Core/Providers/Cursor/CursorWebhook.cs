using System.Text.Json;
using System.Text.RegularExpressions;
using HandoffDapr.Core.Repositories;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Providers.Cursor;

/// <summary>A Cursor <c>statusChange</c> webhook, read defensively.</summary>
public sealed record CursorStatusChange(ProviderAgent Agent, RepositoryName? Repository, string? RawRepository);

public static partial class CursorWebhook
{
    public const string StatusChangeEvent = "statusChange";

    public enum ParseResult
    {
        StatusChange,
        OtherEvent,
        Invalid,
    }

    /// <summary>Parses a verified body. <see cref="ParseResult.Invalid"/> for anything that is not JSON of the expected shape.</summary>
    public static ParseResult TryParse(ReadOnlyMemory<byte> body, out CursorStatusChange? change)
    {
        change = null;
        try
        {
            // One document and nothing after it (trailing content throws, as the completion event's reader does), and no
            // property named twice in an object, in any letter case: read last-wins, a log or proxy reading the first copy
            // would see another report (another status, agent or pull request) than the one applied.
            using var document = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = 32, AllowDuplicateProperties = false });
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || JsonElements.NamesAPropertyTwiceInAnyCase(root))
            {
                return ParseResult.Invalid;
            }

            if (Text(root, "event") is { } name && name != StatusChangeEvent)
            {
                return ParseResult.OtherEvent;
            }

            if (Text(root, "id") is not { } id || !AgentIds.IsValid(id) || Text(root, "status") is not { } status)
            {
                return ParseResult.Invalid;
            }

            root.TryGetProperty("target", out var target);
            root.TryGetProperty("source", out var source);
            var rawRepository = Text(source, "repository");
            var agent = new ProviderAgent(
                id,
                CursorAgentsProvider.MapStatus(status),
                AgentUrl: Text(target, "url"),
                BranchName: Text(target, "branchName"),
                PrUrl: Text(target, "prUrl"),
                Summary: Text(root, "summary"),
                Repository: RepositoryNamed(rawRepository));
            change = new CursorStatusChange(agent, ParseGitHubRepository(rawRepository), rawRepository);
            return ParseResult.StatusChange;
        }
        catch (Exception exception) when (exception is JsonException or InvalidOperationException)
        {
            // InvalidOperationException: a property name that is not valid UTF-16 (a lone surrogate), met by a lookup.
            return ParseResult.Invalid;
        }
    }

    /// <summary><c>github.com/{owner}/{name}</c>, scheme optional, dots allowed in the name; anything else is null.</summary>
    public static RepositoryName? ParseGitHubRepository(string? value)
    {
        if (value is null)
        {
            return null;
        }

        var match = GitHubRepository().Match(value.Trim());
        return match.Success && RepositoryName.TryParse($"{match.Groups["owner"].Value}/{match.Groups["name"].Value}", out var repository)
            ? repository
            : null;
    }

    /// <summary>
    /// The repository a Cursor agent's <c>source.repository</c> names, for <see cref="ProviderAgent.Repository"/>:
    /// <c>owner/name</c> for a GitHub repository; anything else as written, made printable and short, so it is never
    /// taken for the launch's repository; null when there is none.
    /// </summary>
    public static string? RepositoryNamed(string? value) =>
        string.IsNullOrWhiteSpace(value) ? null : ParseGitHubRepository(value)?.FullName ?? RepositoryName.DescribeRejected(value);

    private static string? Text(JsonElement element, string property) => Serialization.JsonElements.String(element, property);

    [GeneratedRegex(@"^(?:https?://)?(?:www\.)?github\.com/(?<owner>[^/\s]+)/(?<name>[^/\s]+?)(?:\.git)?/?$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex GitHubRepository();
}
