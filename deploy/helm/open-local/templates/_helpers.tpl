{{- define "open-local.name" -}}open-local{{- end -}}

{{- /* Prefix of every object name. */ -}}
{{- define "open-local.fullname" -}}
{{- .Values.fullnameOverride | default "open-local" | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "open-local.labels" -}}
app.kubernetes.io/name: open-local
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.customLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "open-local.selector" -}}
app.kubernetes.io/name: open-local
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* Labels of a component: (dict "root" $ "component" "agent"). */ -}}
{{- define "open-local.componentLabels" -}}
{{ include "open-local.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "open-local.componentSelector" -}}
{{ include "open-local.selector" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- /* image "node", "controller" or "scheduler": our images, tag defaulting to the chart's appVersion. */ -}}
{{- define "open-local.image" -}}
{{- $img := index .root.Values.images .name -}}
{{- printf "%s%s:%s" (ternary "" (printf "%s/" .root.Values.images.registry) (empty .root.Values.images.registry)) $img.repository ($img.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{- /* The CSI socket directory of the driver under the kubelet's plugin directory. */ -}}
{{- define "open-local.pluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.kubeletDir) .Values.driverName -}}
{{- end -}}

{{- /* Security context and resources of the controller and scheduler containers: they only talk to the API server. */ -}}
{{- define "open-local.restrictedContainer" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- with .Values.controller.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /* The driver names a StorageClass provisioner or an inline volume of ours
may carry: ours, open-local's, and open-local's legacy yodaplugin name. */ -}}
{{- define "open-local.driverNames" -}}
{{- list .Values.driverName "local.csi.aliyun.com" "yodaplugin.csi.alibabacloud.com" | uniq | toJson -}}
{{- end -}}
