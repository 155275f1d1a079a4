using System.Text.Json.Serialization;

namespace HandoffDapr.Core.Providers.Cursor;

// Request shapes of Cursor's background agents API (v0). Answers are read defensively with
// JsonDocument in CursorAgentsProvider, since Cursor's error and success bodies vary.

internal sealed record CursorLaunchRequest(
    CursorPrompt Prompt,
    CursorSource Source,
    CursorTarget Target,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] CursorWebhookTarget? Webhook,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Model);

internal sealed record CursorPrompt(string Text);

internal sealed record CursorSource(
    string Repository,
    [property: JsonPropertyName("ref"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Ref);

internal sealed record CursorTarget(bool AutoCreatePr, string BranchName);

internal sealed record CursorWebhookTarget(string Url, string Secret);

internal sealed record CursorFollowupRequest(CursorPrompt Prompt);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(CursorLaunchRequest))]
[JsonSerializable(typeof(CursorFollowupRequest))]
internal sealed partial class CursorJsonContext : JsonSerializerContext;
