using HandoffDapr.Core.Handoff;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace HandoffDapr.Service.Extensions;

/// <summary>Logs, traces and metrics: JSON console logs outside development, OTLP export when an endpoint is configured.</summary>
public static class TelemetryExtensions
{
    public static WebApplicationBuilder AddHandoffTelemetry(this WebApplicationBuilder builder)
    {
        if (!builder.Environment.IsDevelopment())
        {
            builder.Logging.AddJsonConsole(options =>
            {
                options.IncludeScopes = true;
                options.TimestampFormat = "O";
                options.UseUtcTimestamp = true;
            });
        }

        // Without an exporter nothing would read the spans, yet a listening tracer provider still builds one per
        // request and per provider call: register it only when there is somewhere to send them. The meters are
        // there either way, for dotnet-counters or dotnet-monitor.
        if (builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"] is not { Length: > 0 } endpoint)
        {
            return builder;
        }

        // OpenTelemetry ignores an endpoint it cannot use ("localhost:4317", no scheme) without a word: nothing would
        // be exported, and nobody told.
        if (!Uri.TryCreate(endpoint.Trim(), UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
        {
            throw new Microsoft.Extensions.Options.OptionsValidationException("OTEL_EXPORTER_OTLP_ENDPOINT", typeof(string),
                ["OTEL_EXPORTER_OTLP_ENDPOINT must be an absolute http(s) URL (http://collector:4317)."]);
        }

        // Set but blank (a template's unset value) is the default too: OpenTelemetry refuses an empty service name, at start.
        var serviceName = builder.Configuration["OTEL_SERVICE_NAME"] is { } configured && !string.IsNullOrWhiteSpace(configured) ? configured.Trim() : "handoff";
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService(serviceName))
            .WithTracing(tracing => tracing
                .AddSource(HandoffTelemetry.Name)
                .AddAspNetCoreInstrumentation(options => options.Filter = context => !Api.HealthEndpoints.IsProbe(context.Request.Path))
                .AddHttpClientInstrumentation()
                .AddOtlpExporter())
            .WithMetrics(metrics => metrics
                .AddMeter(HandoffTelemetry.Name)
                .AddAspNetCoreInstrumentation()
                .AddHttpClientInstrumentation()
                .AddOtlpExporter());
        return builder;
    }
}
