namespace HandoffDapr.Core.Providers;

/// <summary>Agent ids come from providers and from URLs: only this shape ever goes into a request path.</summary>
public static class AgentIds
{
    public const int MaxLength = 128;

    public static bool IsValid(string? agentId) =>
        !string.IsNullOrEmpty(agentId)
        && agentId.Length <= MaxLength
        && agentId.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')
        && agentId is not ("." or "..");
}
