using System.Text.Json;
using System.Text.Json.Serialization;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;

namespace HandoffDapr.Core.Serialization;

/// <summary>
/// snake_case JSON for everything the service stores or says: the wire contract of DESIGN.md, the SQLite
/// rows and the actor state use the same shapes. Source-generated, so no reflection on the hot path.
/// </summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    PropertyNameCaseInsensitive = true,
    NumberHandling = JsonNumberHandling.Strict,
    AllowTrailingCommas = false,
    MaxDepth = 32)]
[JsonSerializable(typeof(RunSnapshot))]
[JsonSerializable(typeof(RunHandoffState))]
[JsonSerializable(typeof(HandoffResult))]
[JsonSerializable(typeof(CodingAgentState))]
[JsonSerializable(typeof(Dictionary<string, CodingAgentState>))]
public sealed partial class HandoffJsonContext : JsonSerializerContext
{
    /// <summary>The options every host uses: this context first, then whatever the host adds.</summary>
    public static JsonSerializerOptions CreateOptions()
    {
        var options = new JsonSerializerOptions(Default.Options);
        return options;
    }
}
