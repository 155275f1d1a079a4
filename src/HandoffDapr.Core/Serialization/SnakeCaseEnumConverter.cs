using System.Text.Json;
using System.Text.Json.Serialization;

namespace HandoffDapr.Core.Serialization;

/// <summary>Enums travel as snake_case strings everywhere: API, SQLite rows, actor state, pub/sub.</summary>
public sealed class SnakeCaseEnumConverter<TEnum>() : JsonStringEnumConverter<TEnum>(JsonNamingPolicy.SnakeCaseLower, allowIntegerValues: false)
    where TEnum : struct, Enum;
