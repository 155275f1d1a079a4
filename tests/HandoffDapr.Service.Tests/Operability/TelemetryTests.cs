using System.Diagnostics;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging.Console;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace HandoffDapr.Service.Tests.Operability;

[CollectionDefinition(nameof(TelemetryCollection), DisableParallelization = true)]
public sealed class TelemetryCollection;

/// <summary>
/// One span per launch attempt and launch metrics by outcome. The meter and the span listener are process-wide, so this
/// runs alone: its run ids (700–705) are used by other classes too.
/// </summary>
[Collection(nameof(TelemetryCollection))]
public sealed class TelemetryTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    [Fact]
    public async Task Each_launch_attempt_is_a_span_with_run_repository_and_integration_but_no_prompt()
    {
        var spans = new List<Activity>();
        using var listener = Spans.Record(spans);
        cursor.Script("acme/down", FakeCursor.Status(503));
        using var factory = new EmbeddedServiceFactory(temp.File("spans.db"), cursor.Url);

        // A person's instruction too: it is part of the prompt, and kept on the launch as the opening is not.
        const string instruction = "Also cover the checkout retry path 5e1f";
        var trigger = Payloads.Trigger(
            Payloads.Run(700, ["acme/shop", "acme/down"], automation: false), instruction: instruction);
        await factory.CreateClient().PostJsonAsync("/runs/700/handoff", trigger);

        var attempts = Spans.Of(spans, "handoff.launch_attempt", 700);
        Assert.Equal(["acme/down", "acme/shop"], attempts.Select(span => (string)span.GetTagItem("handoff.repository")!).Order());
        Assert.All(attempts, span => Assert.Equal(42L, span.GetTagItem("handoff.integration_id")));
        // The first attempt of each (the runbook's handoff.attempt): a retry's span is told from it by this number.
        Assert.All(attempts, span => Assert.Equal(1, span.GetTagItem("handoff.attempt")));
        Assert.Equal(ActivityStatusCode.Error, attempts.Single(span => (string)span.GetTagItem("handoff.repository")! == "acme/down").Status);
        Assert.All(attempts, span => Assert.DoesNotContain(span.TagObjects, tag => tag.Value is string text
            && (text.Contains("Please fix", StringComparison.Ordinal)
                || text.Contains(instruction, StringComparison.Ordinal))));
    }

    [Fact]
    public async Task Completion_event_continues_the_trace_its_cloud_event_carries()
    {
        const string traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
        var spans = new List<Activity>();
        using var listener = Spans.Record(spans);
        using var factory = new EmbeddedServiceFactory(temp.File("trace.db"), cursor.Url);
        var cloudEvent = Payloads.CloudEvent(Payloads.Run(702, ["acme/shop"]));
        cloudEvent["traceparent"] = $"00-{traceId}-00f067aa0ba902b7-01";

        await factory.CreateClient().PostJsonAsync("/events/autofix-run-completed", cloudEvent, "application/cloudevents+json");

        var span = Assert.Single(Spans.Of(spans, "handoff.completion_event", 702));
        Assert.Equal(traceId, span.TraceId.ToHexString());
    }

    /// <summary>
    /// By default embedded mode answers an event once its launches are saved as due, and the schedule makes them: the
    /// wake-up that does is in the event's trace, so its launch attempts are too (issue 8: the trace flows from the
    /// CloudEvent's traceparent). The test client sends no traceparent header: only the body carries it.
    /// </summary>
    [Fact]
    public async Task Launches_the_schedule_makes_for_an_event_continue_the_trace_its_cloud_event_carries()
    {
        const string traceId = "5c1a8ee2f13b4c1e9d0b7e6f3a2c4d10";
        var spans = new List<Activity>();
        using var listener = Spans.Record(spans);
        using var factory = new EmbeddedServiceFactory(temp.File("background-trace.db"), cursor.Url);
        var cloudEvent = Payloads.CloudEvent(Payloads.Run(703, ["acme/shop", "acme/web"]));
        cloudEvent["traceparent"] = $"00-{traceId}-00f067aa0ba902b7-01";

        await factory.CreateClient().PostJsonAsync("/events/autofix-run-completed", cloudEvent, "application/cloudevents+json");
        await factory.RunScheduleAsync();

        Assert.Equal(2, cursor.LaunchRequests);
        Assert.Equal(traceId, Assert.Single(Spans.Of(spans, "handoff.wake", 703)).TraceId.ToHexString());
        var attempts = Spans.Of(spans, "handoff.launch_attempt", 703);
        Assert.Equal(2, attempts.Count);
        Assert.All(attempts, span => Assert.Equal(traceId, span.TraceId.ToHexString()));
    }

    /// <summary>
    /// The event's trace is kept for its launches five minutes at most (<see cref="HandoffDapr.Service.Embedded.EmbeddedRunOwner.EventTraceLifetime"/>),
    /// on the service's clock: launches the schedule makes later (the process was busy, or held the run) start a trace of
    /// their own rather than join one whose other spans are long over.
    /// </summary>
    [Theory]
    [InlineData(299, true)]
    [InlineData(300, false)]
    public async Task Launches_the_schedule_makes_five_minutes_after_the_event_start_a_trace_of_their_own(int secondsLater, bool joinsTheEventsTrace)
    {
        const string traceId = "6d2b9ff3a24c4d2f8e1c7f8a4b3d5e21";
        var spans = new List<Activity>();
        using var listener = Spans.Record(spans);
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
        using var factory = new EmbeddedServiceFactory(temp.File($"late-trace-{secondsLater}.db"), cursor.Url, time);
        var cloudEvent = Payloads.CloudEvent(Payloads.Run(705, ["acme/shop"]));
        cloudEvent["traceparent"] = $"00-{traceId}-00f067aa0ba902b7-01";

        await factory.CreateClient().PostJsonAsync("/events/autofix-run-completed", cloudEvent, "application/cloudevents+json");
        time.Advance(TimeSpan.FromSeconds(secondsLater));
        await factory.RunScheduleAsync();

        Assert.Equal(1, cursor.LaunchRequests);
        var wake = Assert.Single(Spans.Of(spans, "handoff.wake", 705));
        Assert.Equal(joinsTheEventsTrace, wake.TraceId.ToHexString() == traceId);
    }

    /// <summary>
    /// Another process on the same file made the event's launches: the trace this process kept for them is not joined by
    /// its next wake-up of the run, a status poll, which belongs to no event.
    /// </summary>
    [Fact]
    public async Task A_status_poll_does_not_join_the_trace_of_an_event_whose_launches_another_process_made()
    {
        const string traceId = "7d2e4b1c9a8f4e3d8c7b6a5f4e3d2c1b";
        var spans = new List<Activity>();
        using var listener = Spans.Record(spans);
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        var file = temp.File("two-processes-trace.db");
        // The taker's schedule runs only when the test runs it: its pass at start could otherwise claim the launch.
        using var taker = new EmbeddedServiceFactory(file, cursor.Url, time) { ScheduleRunsOnItsOwn = false };
        using var launcher = new EmbeddedServiceFactory(file, cursor.Url, time);
        var cloudEvent = Payloads.CloudEvent(Payloads.Run(704, ["acme/shop"]));
        cloudEvent["traceparent"] = $"00-{traceId}-00f067aa0ba902b7-01";

        // The launcher's host is started first: its schedule's first pass, at start, runs in the background, and started
        // after the event it claimed the launch itself, so that RunScheduleAsync found nothing to wait for. The launch
        // round's wake-up is waited for all the same.
        _ = launcher.CreateClient();
        await taker.CreateClient().PostJsonAsync("/events/autofix-run-completed", cloudEvent, "application/cloudevents+json");
        await launcher.RunScheduleAsync();
        await Eventually.True(() => Spans.Of(spans, "handoff.wake", 704).Count == 1 && cursor.LaunchRequests == 1);
        time.Advance(TimeSpan.FromMinutes(2)); // the first status poll is due
        await taker.RunScheduleAsync();

        var wakes = Spans.Of(spans, "handoff.wake", 704);
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(2, wakes.Count); // the launcher's launch round, the taker's poll
        Assert.All(wakes, span => Assert.NotEqual(traceId, span.TraceId.ToHexString()));
    }

    /// <summary>Outside development the console writes JSON lines (issue 8), with scopes and UTC ISO 8601 timestamps; in development, text.</summary>
    [Theory]
    [InlineData("Production", true)]
    [InlineData("Staging", true)]
    [InlineData("Development", false)]
    public void Console_logs_are_json_lines_outside_development(string environment, bool json)
    {
        using var factory = new EmbeddedServiceFactory(temp.File($"console-{environment}.db"), cursor.Url);
        using var configured = factory.WithWebHostBuilder(builder => builder.UseEnvironment(environment));

        var console = configured.Services.GetRequiredService<IOptionsMonitor<ConsoleLoggerOptions>>().CurrentValue;
        var format = configured.Services.GetRequiredService<IOptionsMonitor<JsonConsoleFormatterOptions>>().CurrentValue;

        Assert.Equal(json, console.FormatterName == ConsoleFormatterNames.Json);
        if (json)
        {
            Assert.True(format.IncludeScopes);
            Assert.True(format.UseUtcTimestamp);
            Assert.Equal("O", format.TimestampFormat);
        }
    }

    [Theory]
    [InlineData(null, false)]
    [InlineData("http://127.0.0.1:4317", true)]
    public void Tracer_runs_only_when_there_is_an_exporter_to_send_to(string? endpoint, bool expected)
    {
        using var factory = new EmbeddedServiceFactory(temp.File($"otel-{expected}.db"), cursor.Url, settings: new Dictionary<string, string?> { ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint });

        var tracer = factory.Services.GetService(typeof(OpenTelemetry.Trace.TracerProvider));

        Assert.Equal(expected, tracer is not null);
    }

    /// <summary>
    /// <c>OTEL_SERVICE_NAME</c> set but empty (a template's unset value) is the default, <c>handoff</c>: it used to reach
    /// OpenTelemetry's AddService, which throws for an empty name, and start-up died on an unhandled exception (exit 134).
    /// </summary>
    [Theory]
    [InlineData("")]
    [InlineData(" ")]
    public void Empty_service_name_with_an_exporter_is_the_default_name(string serviceName)
    {
        using var factory = new EmbeddedServiceFactory(temp.File("otel-name.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4317",
            ["OTEL_SERVICE_NAME"] = serviceName,
        });

        var tracer = (OpenTelemetry.Trace.TracerProvider)factory.Services.GetService(typeof(OpenTelemetry.Trace.TracerProvider))!;
        Assert.NotNull(factory.Services.GetService(typeof(MeterProvider)));

        Assert.Equal("handoff", OpenTelemetry.ProviderExtensions.GetResource(tracer).Attributes.Single(attribute => attribute.Key == "service.name").Value);
    }

    /// <summary>
    /// With an exporter configured, what is exported is the service's own: its spans (launch attempts) and its meter
    /// (launch outcomes), and the API's requests but not the health probes, which every prober sends every few seconds.
    /// Without the source or the meter added, the collector got nothing of the handoff, and nobody was told.
    /// </summary>
    [Fact]
    public async Task Exporter_gets_the_services_spans_and_meter_and_api_requests_but_not_health_probes()
    {
        var spans = new List<Activity>();
        var exporter = new MetricNames();
        using var plain = new EmbeddedServiceFactory(temp.File("otel-export.db"), cursor.Url, settings: new Dictionary<string, string?> { ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4317" });
        using var factory = plain.WithWebHostBuilder(builder => builder.ConfigureServices(services =>
        {
            services.ConfigureOpenTelemetryTracerProvider(tracing => tracing.AddProcessor(new RecordSpansProcessor(spans)));
            services.ConfigureOpenTelemetryMeterProvider(metrics => metrics.AddReader(new BaseExportingMetricReader(exporter)));
        }));
        using var client = factory.CreateClient();

        Assert.Equal(System.Net.HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/706/handoff", Payloads.Trigger(Payloads.Run(706, ["acme/shop"], automation: false)))).StatusCode);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await client.GetAsync("/healthz")).StatusCode);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await client.GetAsync("/readyz")).StatusCode);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await client.GetAsync("/runs/706/handoff")).StatusCode);
        ((MeterProvider)factory.Services.GetService(typeof(MeterProvider))!).ForceFlush();

        // A request's span ends as the server disposes of its context, which may come just after the client has the answer.
        List<Activity> Recorded()
        {
            lock (spans)
            {
                return [.. spans];
            }
        }

        bool Requested(Activity span, string method, string path) => (span.GetTagItem("url.path") as string) == path && (span.GetTagItem("http.request.method") as string) == method;
        await Eventually.True(() => Recorded().Any(span => Requested(span, "POST", "/runs/706/handoff")) && Recorded().Any(span => Requested(span, "GET", "/runs/706/handoff")));
        var recorded = Recorded();
        Assert.Contains(recorded, span => span.Source.Name == HandoffTelemetry.Name && span.OperationName == "handoff.launch_attempt" && Equals(span.GetTagItem("handoff.run_id"), 706L));
        // The probes were answered before the read whose span is recorded: their own would be recorded by now.
        Assert.DoesNotContain(recorded, span => (span.GetTagItem("url.path") as string) is "/healthz" or "/readyz");
        Assert.Contains("handoff.launches", exporter.Names);
    }

    private sealed class RecordSpansProcessor(List<Activity> spans) : OpenTelemetry.BaseProcessor<Activity>
    {
        public override void OnEnd(Activity data)
        {
            lock (spans)
            {
                spans.Add(data);
            }
        }
    }

    private sealed class MetricNames : OpenTelemetry.BaseExporter<Metric>
    {
        public HashSet<string> Names { get; } = [];

        public override OpenTelemetry.ExportResult Export(in OpenTelemetry.Batch<Metric> batch)
        {
            foreach (var metric in batch)
            {
                Names.Add(metric.Name);
            }

            return OpenTelemetry.ExportResult.Success;
        }
    }

    [Fact]
    public async Task Launch_outcomes_are_counted_by_outcome_and_failure_type()
    {
        using var launches = new MetricCollector<long>(null, HandoffTelemetry.Name, "handoff.launches");
        using var retries = new MetricCollector<long>(null, HandoffTelemetry.Name, "handoff.retries.scheduled");
        cursor.Script("acme/limited", FakeCursor.Status(429));
        cursor.Script("acme/denied", FakeCursor.Status(401));
        using var factory = new EmbeddedServiceFactory(temp.File("metrics.db"), cursor.Url);

        await factory.CreateClient().PostJsonAsync("/runs/701/handoff", Payloads.Trigger(Payloads.Run(701, ["acme/shop", "acme/limited", "acme/denied"], automation: false)));

        var byOutcome = launches.GetMeasurementSnapshot()
            .GroupBy(m => ((string)m.Tags["handoff.outcome"]!, (string)m.Tags["handoff.failure_type"]!))
            .ToDictionary(g => g.Key, g => g.Sum(m => m.Value));
        Assert.Equal(1, byOutcome[("launched", "none")]);
        Assert.Equal(1, byOutcome[("retry_scheduled", "rate_limited")]);
        Assert.Equal(1, byOutcome[("failed", "invalid_credentials")]);
        Assert.Equal(1, retries.GetMeasurementSnapshot().Sum(m => m.Value));
    }

    [Fact]
    public async Task Webhooks_are_counted_with_the_snake_case_values_the_runbook_alerts_on()
    {
        using var webhooks = new MetricCollector<long>(null, HandoffTelemetry.Name, "handoff.webhook.events");
        using var factory = new EmbeddedServiceFactory(temp.File("hooks.db"), cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:Integrations:42:WebhookSecret"] = WebhookSecret });
        using var request = SignedReport("/webhooks/cursor/42?run_id=703", UnknownAgentRunning());

        await factory.CreateClient().SendAsync(request);

        var measurement = Assert.Single(webhooks.GetMeasurementSnapshot());
        Assert.Equal(("unknown_agent", "running"), ((string)measurement.Tags["handoff.outcome"]!, (string)measurement.Tags["handoff.provider_status"]!));
    }

    [Theory]
    [InlineData("/webhooks/cursor/42", true, "no_run_id")]
    [InlineData("/webhooks/cursor/42?run_id=704", false, "no_repository")]
    public async Task Webhooks_ignored_for_want_of_a_run_or_a_repository_are_counted_so_a_moved_field_can_be_alerted_on(string path, bool withRepository, string outcome)
    {
        // If Cursor moved source.repository, or the webhook URL lost its run_id, every report would be ignored: the counter
        // must show it, as the log line alone (information level) would not page anyone.
        using var webhooks = new MetricCollector<long>(null, HandoffTelemetry.Name, "handoff.webhook.events");
        using var factory = new EmbeddedServiceFactory(temp.File("ignored-hooks.db"), cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:Integrations:42:WebhookSecret"] = WebhookSecret });
        var json = new System.Text.Json.Nodes.JsonObject { ["event"] = "statusChange", ["id"] = "bc-1", ["status"] = "FINISHED" };
        if (withRepository)
        {
            json["source"] = new System.Text.Json.Nodes.JsonObject { ["repository"] = "https://github.com/acme/shop" };
        }

        using var request = SignedReport(path, json);

        var response = await factory.CreateClient().SendAsync(request);

        Assert.Equal(System.Net.HttpStatusCode.NoContent, response.StatusCode);
        var measurement = Assert.Single(webhooks.GetMeasurementSnapshot());
        Assert.Equal((outcome, "finished"), ((string)measurement.Tags["handoff.outcome"]!, (string)measurement.Tags["handoff.provider_status"]!));
    }

    /// <summary>
    /// The launch duration is in seconds, and the runbook alerts on its p99 against <c>RequestTimeout</c> (30 s). Exported
    /// by OpenTelemetry without bucket boundaries of its own, it got the SDK's default ones, made for milliseconds (0, 5,
    /// 10, 25, 50, …): every launch under 5 s, nearly all of them, fell into one bucket, and a provider slowing from 0.3 s
    /// to 3 s did not show.
    /// </summary>
    [Fact]
    public void Launch_durations_of_a_fraction_of_a_second_a_second_and_a_few_seconds_fall_in_buckets_of_their_own()
    {
        // A tag of its own: other test classes record launch durations meanwhile.
        const long integration = 918_273_645;
        var exporter = new HistogramBuckets("handoff.launch.duration", integration);
        using (var meters = OpenTelemetry.Sdk.CreateMeterProviderBuilder()
            .AddMeter(HandoffTelemetry.Name)
            .AddReader(new BaseExportingMetricReader(exporter))
            .Build())
        {
            foreach (var seconds in new[] { 0.3, 1.5, 3.0, 28.0, 40.0 })
            {
                HandoffTelemetry.LaunchDuration.Record(seconds, new KeyValuePair<string, object?>("handoff.integration_id", integration));
            }

            meters.ForceFlush();
        }

        // Each duration alone in its bucket: a 28 s launch (about to time out) apart from a 40 s one too.
        Assert.Equal(5, exporter.Counts.Sum());
        Assert.Equal(5, exporter.Counts.Count(count => count == 1));
    }

    private sealed class HistogramBuckets(string name, long integration) : OpenTelemetry.BaseExporter<Metric>
    {
        public List<long> Counts { get; } = [];

        public override OpenTelemetry.ExportResult Export(in OpenTelemetry.Batch<Metric> batch)
        {
            foreach (var metric in batch)
            {
                if (metric.Name != name)
                {
                    continue;
                }

                // Cumulative: each export has all the measurements so far.
                Counts.Clear();

                foreach (ref readonly var point in metric.GetMetricPoints())
                {
                    var ours = false;
                    foreach (var tag in point.Tags)
                    {
                        ours |= tag.Key == "handoff.integration_id" && Equals(tag.Value, integration);
                    }

                    if (ours)
                    {
                        foreach (var bucket in point.GetHistogramBuckets())
                        {
                            Counts.Add(bucket.BucketCount);
                        }
                    }
                }
            }

            return OpenTelemetry.ExportResult.Success;
        }
    }

    /// <summary>
    /// Without an exporter the README sends the operator to dotnet-counters, which shows a meter only when asked for it
    /// by name: the runbook must give that name, and list every instrument on it.
    /// </summary>
    [Fact]
    public void Runbook_names_the_meter_and_every_instrument_on_it()
    {
        var runbook = File.ReadAllText(Path.Combine(Security.WebhookSignatureTests.RepositoryRoot(), "docs", "runbook.md"));
        // The instruments are static fields: made once the type is first used.
        Assert.NotNull(HandoffTelemetry.Launches);
        var instruments = new List<string>();
        using (var listener = new System.Diagnostics.Metrics.MeterListener
        {
            InstrumentPublished = (instrument, _) =>
            {
                if (instrument.Meter.Name == HandoffTelemetry.Name)
                {
                    instruments.Add(instrument.Name);
                }
            },
        })
        {
            listener.Start();
        }

        Assert.Contains($"--counters {HandoffTelemetry.Name}", runbook);
        Assert.Contains($"meter `{HandoffTelemetry.Name}`", runbook);
        Assert.True(instruments.Count >= 6, $"only {instruments.Count} instruments found");
        Assert.Equal([], instruments.Where(name => !runbook.Contains($"`{name}", StringComparison.Ordinal)).ToArray());
    }

    /// <summary>
    /// An alert or a dashboard groups by the tags the runbook's table gives after each instrument's name
    /// (<c>handoff.launches{handoff.outcome, handoff.failure_type}</c>). Two tags were once missing from it, found only
    /// by someone reading the table against the code: here every instrument is made to record, and the tags it was
    /// recorded with must be the ones its row lists, no more and no fewer.
    /// </summary>
    [Fact]
    public async Task Runbook_lists_each_instrument_with_the_tags_it_is_recorded_with()
    {
        var published = new List<string>();
        var recorded = new Dictionary<string, HashSet<string>>();
        void Record(System.Diagnostics.Metrics.Instrument instrument, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            lock (recorded)
            {
                var keys = recorded.TryGetValue(instrument.Name, out var known) ? known : recorded[instrument.Name] = [];
                foreach (var tag in tags)
                {
                    keys.Add(tag.Key);
                }
            }
        }

        using var listener = new System.Diagnostics.Metrics.MeterListener
        {
            InstrumentPublished = (instrument, meters) =>
            {
                if (instrument.Meter.Name == HandoffTelemetry.Name)
                {
                    published.Add(instrument.Name);
                    meters.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((instrument, _, tags, _) => Record(instrument, tags));
        listener.SetMeasurementEventCallback<double>((instrument, _, tags, _) => Record(instrument, tags));
        listener.Start();
        cursor.Script("acme/limited", FakeCursor.Status(429));
        cursor.Script("acme/denied", FakeCursor.Status(401));
        using var factory = new EmbeddedServiceFactory(temp.File("tags.db"), cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:Integrations:42:WebhookSecret"] = WebhookSecret });
        var client = factory.CreateClient();

        // A launch, a retry and a refusal (launches, retries, durations, in-flight rounds, status changes), then a report.
        await client.PostJsonAsync("/runs/705/handoff", Payloads.Trigger(Payloads.Run(705, ["acme/shop", "acme/limited", "acme/denied"], automation: false)));
        using var report = SignedReport("/webhooks/cursor/42?run_id=705", UnknownAgentRunning());
        await client.SendAsync(report);
        listener.Dispose();

        // The table's rows: | `name{tag, tag}` | meaning | alert when |, or `name` alone for an instrument without tags.
        var runbook = File.ReadAllText(Path.Combine(Security.WebhookSignatureTests.RepositoryRoot(), "docs", "runbook.md"));
        var table = runbook[runbook.IndexOf("## Metrics and alerts", StringComparison.Ordinal)..];
        var documented = System.Text.RegularExpressions.Regex.Matches(table, @"^\| `(?<name>[a-z._]+)(\{(?<tags>[^}]*)\})?` \|", System.Text.RegularExpressions.RegexOptions.Multiline)
            .ToDictionary(
                row => row.Groups["name"].Value,
                row => row.Groups["tags"].Value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Order().ToArray());
        // A new instrument needs this scenario to make it record, so that its tags are held to the table too.
        Assert.Contains("handoff.launches", published);
        Assert.Equal(published.Order(), recorded.Keys.Order());
        Assert.All(recorded, instrument =>
        {
            Assert.True(documented.TryGetValue(instrument.Key, out var tags), $"{instrument.Key} has no row in the runbook's table");
            Assert.Equal(instrument.Value.Order().ToArray(), tags);
        });
    }

    private const string WebhookSecret = "webhook-secret-of-integration-42-0123456789";

    /// <summary>Cursor's report that an agent the run does not have is running.</summary>
    private static System.Text.Json.Nodes.JsonObject UnknownAgentRunning() =>
        new() { ["event"] = "statusChange", ["id"] = "bc-unknown", ["status"] = "RUNNING", ["source"] = new System.Text.Json.Nodes.JsonObject { ["repository"] = "https://github.com/acme/shop" } };

    /// <summary>A status report to integration 42's webhook route, signed with its secret.</summary>
    private static HttpRequestMessage SignedReport(string path, System.Text.Json.Nodes.JsonObject report) =>
        Payloads.SignedWebhook(path, report.ToJsonString(), WebhookSecret);

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
