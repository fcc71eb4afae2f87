{{/*
The chart's short name: nameOverride, else the chart name. It is the
app.kubernetes.io/name label, so changing it after install changes the Deployment selector.
*/}}
{{- define "rampart.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every object the chart makes: fullnameOverride, else the release name when it
already says rampart (release "rampart" gives "rampart", not "rampart-rampart"), else
<release>-<name>. Truncated to 63 characters, the longest DNS label.
*/}}
{{- define "rampart.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "rampart.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The metrics Service: a Service name must itself fit in 63 characters. */}}
{{- define "rampart.metricsService" -}}
{{- printf "%s-metrics" (include "rampart.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/* chart name and version, as the helm.sh/chart label allows */}}
{{- define "rampart.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object the chart makes. */}}
{{- define "rampart.labels" -}}
helm.sh/chart: {{ include "rampart.chart" . }}
{{ include "rampart.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* What the Deployment, Service, PDB and NetworkPolicy select the operator's pods by. */}}
{{- define "rampart.selector" -}}
app.kubernetes.io/name: {{ include "rampart.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The helm test Pod's labels. Its name label differs from the operator's so that neither the
Service, the PDB nor the operator's NetworkPolicy select it.
*/}}
{{- define "rampart.testSelector" -}}
app.kubernetes.io/name: {{ include "rampart.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's image: by digest when one is given, else by tag. */}}
{{- define "rampart.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
PromQL label matchers that select the operator's own series: by default the job and namespace
the chart's ServiceMonitor gives them (the Prometheus Operator names the job after the Service).
*/}}
{{- define "rampart.scrapeSelector" -}}
{{- if .Values.prometheusRule.scrapeSelector }}
{{- .Values.prometheusRule.scrapeSelector }}
{{- else }}
{{- printf "job=%q,namespace=%q" (include "rampart.metricsService" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* The runbook of one alert, as a link into docs/runbooks.md (or the configured copy). */}}
{{- define "rampart.runbook" -}}
{{- printf "%s#%s" (trimSuffix "/" .root.Values.prometheusRule.runbookBaseURL) (lower .alert) }}
{{- end }}

{{/* A duration such as 26h, 8d or 90m in seconds (one unit: s, m, h, d or w). */}}
{{- define "rampart.seconds" -}}
{{- $n := regexFind "^[0-9]+" . -}}
{{- $unit := trimPrefix $n . -}}
{{- $per := dict "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800 -}}
{{- if not (hasKey $per $unit) }}{{ fail (printf "%q is no duration like 26h or 8d" .) }}{{ end -}}
{{- mul (int $n) (get $per $unit) -}}
{{- end }}

{{/*
One alert of the PrometheusRule, left out when `prometheusRule.alerts.<name>.enabled` is false;
its severity, `for:` and labels come from the values. Takes root, name, expr, summary and
description.
*/}}
{{- define "rampart.alert" -}}
{{- $cfg := index .root.Values.prometheusRule.alerts .name | default dict -}}
{{- if not (hasKey $cfg "enabled") }}{{ fail (printf "prometheusRule.alerts.%s is not set" .name) }}{{ end -}}
{{- if $cfg.enabled -}}
- alert: {{ .name }}
  expr: {{ .expr }}
  for: {{ $cfg.for }}
  labels: {{- merge (deepCopy ($cfg.labels | default dict)) (dict "severity" $cfg.severity) (deepCopy (.root.Values.prometheusRule.alertLabels | default dict)) | toYaml | nindent 4 }}
  annotations:
    summary: {{ .summary | quote }}
    description: {{ .description | quote }}
    runbook_url: {{ include "rampart.runbook" (dict "root" .root "alert" .name) | quote }}
{{- end }}
{{- end }}
